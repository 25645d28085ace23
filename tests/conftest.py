"""Test configuration: 4 CPU devices (for sharding tests), a persistent compile cache,
and strict rank promotion so silent broadcasting bugs fail loudly."""

import os

import jax
import pytest
from hypothesis import settings

# Same examples on every run, so CI cannot turn red by chance.
settings.register_profile("aprec", derandomize=True, deadline=None)
settings.load_profile("aprec")

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update(
    "jax_compilation_cache_dir",
    os.path.expanduser(os.environ.get("APREC_JAX_CACHE", "~/.cache/aprec-jax")),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
  """Modules holding a slow end-to-end case run first (each module kept whole, so its
  fixtures are built once): pytest-xdist hands tests out in this order, and a 30-40 s case
  collected last would otherwise finish alone while the other workers idle."""
  del config
  slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.module.__name__ not in slow_modules)  # stable


@pytest.fixture(scope="session")
def cnn_ops():
  """The digits CNN's op table at batch 32 (the RPM tests' deployment)."""
  from op_tables import digits_ops

  return digits_ops(32)


@pytest.fixture(scope="session")
def spec():
  """The edge NPU preset."""
  from aprec.hardware import edge_npu

  return edge_npu()
