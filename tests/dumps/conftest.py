"""Shared for the dump tests: the real DILA XML fixtures, the demo's generated archives."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.demo.dumps import DemoDumps
from collector.dumps.reader import TAR_BACKENDS
from tests.conftest import SHARED, require

LEGI_XML = SHARED / "fixtures" / "legi-xml"


@pytest.fixture
def legi_xml() -> Path:
    """../shared/fixtures/legi-xml (real DILA files)."""
    require(LEGI_XML.is_dir(), f"real DILA XML fixtures not found at {LEGI_XML} (../shared is absent)")
    return LEGI_XML


@pytest.fixture(scope="session")
def demo_dumps() -> DemoDumps:
    return DemoDumps(articles=600, seed=3)


@pytest.fixture(scope="session")
def demo_archives(demo_dumps: DemoDumps, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The global and the three deltas, written once for the session."""
    return demo_dumps.write_all(tmp_path_factory.mktemp("demo-dumps"))


@pytest.fixture(params=["libarchive", "tarfile"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each tar walk of the reader (libarchive is legi.py's and the default when it loads)."""
    require(request.param in TAR_BACKENDS, "libarchive (libarchive-c + libarchive.so.13) is not available")
    return str(request.param)
