"""Which cluster a command joins and with which token, decided without Ray.

Joining real token-authenticated clusters (accepted, refused, missing token) is tested against
`ray start --head` in tests/integration/test_cluster_jobs.py.
"""

from __future__ import annotations

import os

import pytest
from s3server import free_port

from signray.errors import ConfigError
from signray.tuning.address import LOOPBACK_ENV, prepare_target
from signray.tuning.auth import (
    AUTH_MODE_ENV,
    TOKEN_ENV,
    TOKEN_PATH_ENV,
    check_cluster,
    find_token,
    use_token_if_found,
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No token anywhere, no mode, no RAY_ADDRESS; HOME is an empty folder."""
    for key in (TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV, "RAY_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_tokens_are_found_where_ray_looks_in_its_order(clean_env, monkeypatch):
    assert find_token()[0] is None
    home_token = clean_env / ".ray" / "auth_token"
    home_token.parent.mkdir()
    home_token.write_text("from-home\n")
    assert find_token() == ("from-home", str(home_token))
    path_token = clean_env / "tok"
    path_token.write_text("from-path")
    monkeypatch.setenv(TOKEN_PATH_ENV, str(path_token))
    assert find_token() == ("from-path", f"{TOKEN_PATH_ENV}={path_token}")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert find_token() == ("from-env", TOKEN_ENV)


def test_token_mode_is_chosen_only_when_a_token_exists_and_no_mode_was_set(clean_env, monkeypatch):
    use_token_if_found()
    assert AUTH_MODE_ENV not in os.environ
    monkeypatch.setenv(TOKEN_ENV, "t")
    use_token_if_found()
    assert os.environ[AUTH_MODE_ENV] == "token"
    monkeypatch.setenv(AUTH_MODE_ENV, "disabled")  # the user's choice wins
    use_token_if_found()
    assert os.environ[AUTH_MODE_ENV] == "disabled"


def test_no_cluster_at_the_address_is_a_clear_error_at_once(clean_env):
    address = f"127.0.0.1:{free_port()}"  # nothing listens
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at {address} \(--address\)"):
        check_cluster(address, "--address")


def test_the_target_comes_from_the_flag_then_ray_address_else_a_new_local_cluster(
    clean_env, monkeypatch
):
    monkeypatch.delenv(LOOPBACK_ENV, raising=False)
    local = prepare_target(None)
    assert local.local and os.environ[LOOPBACK_ENV] == "0"  # read by Ray when it starts one
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(ConfigError, match=rf"no Ray cluster answers at {address} \(RAY_ADDRESS\)"):
        prepare_target(None)  # a job's entrypoint joins its cluster, never starts a second one
    flag = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConfigError, match=rf"at {flag} \(--address\)"):
        prepare_target(flag)  # the flag wins over the environment
    assert prepare_target("auto").address == "auto"  # Ray resolves it (no probe possible)


class _Gcs:
    """A gRPC server on 127.0.0.1 answering the probe's RPC as a GCS with or without token
    authentication does (the real clusters are in tests/integration/test_cluster_jobs.py)."""

    def __init__(self, token: str | None) -> None:
        from concurrent import futures

        import grpc

        def answer(request, context):
            sent = dict(context.invocation_metadata()).get("authorization")
            if token is not None and sent != f"Bearer {token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "token missing or wrong")
            return b""

        handler = grpc.method_handlers_generic_handler(
            "ray.rpc.NodeInfoGcsService",
            {"GetClusterId": grpc.unary_unary_rpc_method_handler(answer, lambda b: b, lambda b: b)},
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def __enter__(self) -> _Gcs:
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(None)


def test_token_mode_only_for_a_cluster_that_asks_for_a_token(clean_env, monkeypatch):
    """A token in ~/.ray must not switch token mode on for a cluster without authentication
    (its trial actors would be destroyed before they start); a token cluster gets it."""
    monkeypatch.setenv(TOKEN_ENV, "secret")
    with _Gcs(token=None) as open_cluster:
        check_cluster(open_cluster.address, "--address")
    assert AUTH_MODE_ENV not in os.environ
    with _Gcs(token="secret") as token_cluster:
        check_cluster(token_cluster.address, "--address")
    assert os.environ[AUTH_MODE_ENV] == "token"
    monkeypatch.setenv(TOKEN_ENV, "wrong")
    monkeypatch.delenv(AUTH_MODE_ENV)
    with (
        _Gcs(token="secret") as token_cluster,
        pytest.raises(ConfigError, match="refused the token"),
    ):
        check_cluster(token_cluster.address, "--address")
