"""The scenarios; importing this package registers them all (registration order = the default run order)."""

from fwbench.scenarios import local, workers  # noqa: F401

# isort: split
from fwbench.scenarios import memory  # noqa: F401

# isort: split
from fwbench.scenarios import journal  # noqa: F401

# isort: split
from fwbench.scenarios import flow  # noqa: F401

# isort: split
from fwbench.scenarios import workflows  # noqa: F401

# isort: split
from fwbench.scenarios import startup  # noqa: F401

# isort: split
from fwbench.scenarios import fleet  # noqa: F401

# isort: split
from fwbench.scenarios import transport  # noqa: F401
