"""Token authentication when joining a Ray cluster: find the token, tell Ray to send it, and ask
the cluster in milliseconds whether it accepts us, so a missing or wrong token is one clear error
(exit 2) instead of Ray's 20 s of retries and a traceback. Imports no Ray.

Ray (2.60) looks for a token only when ``RAY_AUTH_MODE=token``: in ``RAY_AUTH_TOKEN``, then the
file ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``. ``ray start --head`` turns token mode on
for its cluster whenever such a token exists, but a client joining with ``--address`` does not:
it connects without the token and is refused. So when the cluster asks for a token, one is
available and the user has not chosen a mode, we choose ``token`` for them (as ``ray start``
does for itself). Only then: a client in token mode that joins a cluster without authentication
connects, but the trial actors it creates are destroyed before they start (measured with Ray
2.60), so a token lying in ``~/.ray`` must not switch it on for every cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

from signray.errors import ConfigError

__all__ = ["AUTH_MODE_ENV", "TOKEN_ENV", "TOKEN_PATH_ENV", "check_cluster", "use_token_if_found"]

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# A cheap RPC every GCS answers; the token travels as `authorization: Bearer ...` metadata.
_PROBE_RPC = "/ray.rpc.NodeInfoGcsService/GetClusterId"
PROBE_TIMEOUT_S = 5.0

_WHERE_TOKENS_ARE = (
    f"set {TOKEN_ENV}, point {TOKEN_PATH_ENV} at a token file, or copy the head node's "
    "~/.ray/auth_token (`ray get-auth-token` prints it) to this machine"
)


def _default_token_file() -> Path:
    return Path.home() / ".ray" / "auth_token"


def find_token() -> tuple[str | None, str]:
    """(token or None, where it came from or where it was looked for), in Ray's order."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip(), TOKEN_ENV
    path_env = os.environ.get(TOKEN_PATH_ENV)
    candidates = [(Path(path_env).expanduser(), f"{TOKEN_PATH_ENV}={path_env}")] if path_env else []
    candidates.append((_default_token_file(), str(_default_token_file())))
    for path, label in candidates:
        try:
            token = path.read_text().strip()
        except OSError:
            continue
        if token:
            return token, label
    return None, f"{TOKEN_ENV}, {TOKEN_PATH_ENV} or {_default_token_file()}"


def use_token_if_found() -> None:
    """Send the token when one exists and the user set no RAY_AUTH_MODE (Ray would not)."""
    if AUTH_MODE_ENV not in os.environ and find_token()[0] is not None:
        os.environ[AUTH_MODE_ENV] = "token"


def check_cluster(address: str, where: str) -> None:
    """Ask the GCS at ``host:port`` whether it answers and whether it wants a token; choose token
    mode when it does and a token is found (the user's own RAY_AUTH_MODE wins). Raise a
    `ConfigError` naming what to fix when the cluster does not answer or refuses us. `where`
    names the flag or variable the address came from."""
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        use_token_if_found()  # a TLS cluster: this probe speaks plain gRPC, Ray's own connects
        return
    token, source = find_token()
    chosen = os.environ.get(AUTH_MODE_ENV, "").lower()
    send = token if chosen == "token" else None
    err = _probe(address, send)
    if err is not None and not chosen and token is not None and _needs_token(err):
        send = token
        err = _probe(address, send)
        if err is None:
            os.environ[AUTH_MODE_ENV] = "token"
    if err is not None and (problem := _refusal(err, address, where, send, source)):
        raise ConfigError([problem])


def _probe(address: str, token: str | None):
    """None when the GCS answered, else the gRPC error."""
    import grpc

    channel = grpc.insecure_channel(address)
    try:
        probe = channel.unary_unary(
            _PROBE_RPC, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        metadata = [("authorization", f"Bearer {token}")] if token else None
        probe(b"", timeout=PROBE_TIMEOUT_S, metadata=metadata)
        return None
    except grpc.RpcError as err:
        return err
    finally:
        channel.close()


def _needs_token(err) -> bool:
    import grpc

    return hasattr(err, "code") and err.code() == grpc.StatusCode.UNAUTHENTICATED


def _refusal(err, address: str, where: str, sent: str | None, source: str) -> str | None:
    """What the probe's failure means; None when it says nothing about us (another answer of
    a cluster whose protocol differs: Ray's own connection decides then)."""
    import grpc

    code = err.code() if hasattr(err, "code") else None
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if sent is not None:
            return (
                f"the Ray cluster at {address} ({where}) refused the token from {source}: it "
                f"is not this cluster's token; {_WHERE_TOKENS_ARE}"
            )
        if os.environ.get(AUTH_MODE_ENV):
            return (
                f"the Ray cluster at {address} ({where}) requires token authentication but "
                f"{AUTH_MODE_ENV}={os.environ[AUTH_MODE_ENV]} is set; unset it or set it to token"
            )
        return (
            f"the Ray cluster at {address} ({where}) requires token authentication and no "
            f"token was found in {source}: {_WHERE_TOKENS_ARE}"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no Ray cluster answered at {address} ({where}) within {PROBE_TIMEOUT_S:g} s"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"no Ray cluster answers at {address} ({where}): {err.details()}"
    return None
