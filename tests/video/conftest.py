"""Real videos of a person, made once per test session."""

from __future__ import annotations

import pytest
from videohelpers import write_video


@pytest.fixture(scope="session")
def person_video(tmp_path_factory):
    """24 frames at 30 fps of the photographed person sliding across the frame (MPEG-4)."""
    return write_video(tmp_path_factory.mktemp("videos") / "person.mp4", frames=24)
