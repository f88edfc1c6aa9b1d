"""Session set-up shared by every test module."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile the packet kernels into this version's cache before any test runs, as ``make`` does at
    install time: tests that time or measure a child process then see the analysis, not numba's compiler
    (a cold compile takes about 0.5 GB and 10-40 s)."""
    from analyzer.report.kernels import warm

    warm()
