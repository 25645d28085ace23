"""User models (``package.module:factory``) and NNP spec files, wherever the CLI, configs and
the Python API accept a bundled model or a preset name (issue 9, item 3)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from aprec.app import cli

FACTORY_MODULE = textwrap.dedent("""
    import jax
    import numpy as np
    from flax import linen as nn

    from aprec.models import DatasetSplits, LoadedModel, Split


    def _split(rng, n, float_labels=False):
      x = rng.normal(size=(n, 6)).astype(np.float32)
      y = (x[:, 0] > 0).astype(np.float32 if float_labels else np.int32)
      return Split(x, y)


    def _model(float_labels=False):
      net = nn.Sequential([nn.Dense(5), nn.relu, nn.Dense(2)])
      rng = np.random.default_rng(0)
      params = net.init(jax.random.key(0), np.zeros((1, 6), np.float32))
      data = DatasetSplits(train=_split(rng, 40, float_labels), val=_split(rng, 24, float_labels),
                           test=_split(rng, 24, float_labels))
      return LoadedModel(apply_fn=net.apply, params=params, data=data, name="tiny")


    def tiny():
      return _model()


    def tiny_float_labels():
      return _model(float_labels=True)


    def not_a_model():
      return {"apply_fn": None}


    NOT_CALLABLE = 3
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  (tmp_path / "my_models.py").write_text(FACTORY_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  return "my_models"


def _error(argv, capsys) -> str:
  with pytest.raises(SystemExit) as info:
    cli.main(argv)
  assert info.value.code == 2
  return capsys.readouterr().err


def test_user_factory_through_ops_and_eval(user_module, capsys):
  cli.main(["ops", f"{user_module}:tiny", "--json"])
  table = json.loads(capsys.readouterr().out)
  assert [op["macs"] for op in table["ops"]] == [24 * 6 * 5, 24 * 5 * 2]  # the 24 test rows
  cli.main(["eval", f"{user_module}:tiny", "--modes", "fp32", "--json"])
  result = json.loads(capsys.readouterr().out)
  from my_models import tiny  # an independent reference: the model's own fp32 logits

  m = tiny()
  logits = np.asarray(m.apply_fn(m.params, m.data.test.x))
  assert result["accuracy"] == pytest.approx(float((logits.argmax(1) == m.data.test.y).mean()))


@pytest.mark.parametrize(
    "ref, message",
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("my_models:missing", "has no callable 'missing'"),
        ("my_models:NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        ("my_models:not_a_model", "returned dict; expected aprec.models.LoadedModel"),
        ("my_models:", "package.module:factory"),
    ],
)
def test_bad_factories_say_what_is_wrong(user_module, ref, message, capsys):
  assert message in _error(["ops", ref], capsys)


def test_config_accepts_a_user_factory_and_rejects_a_bad_one(user_module):
  from aprec.app import config

  assert config.resolve({"model": f"{user_module}:tiny"}).model == "my_models:tiny"
  with pytest.raises(ValueError, match="cannot import module 'nope_mod'"):
    config.resolve({"model": "nope_mod:f"})


def test_spec_written_out_and_read_back_drives_the_simulator(user_module, tmp_path, capsys):
  path = tmp_path / "my_npu.json"
  cli.main(["spec", "edge_npu", "--out", str(path)])
  assert "wrote" in capsys.readouterr().out
  data = json.loads(path.read_text())
  assert data["name"] == "edge_npu" and data["relative_throughput"]["int4"] == 4.0
  runs = {}
  for label, spec in (("preset", "edge_npu"), ("file", str(path))):
    cli.main(
        [
            "simulate",
            "steady",
            "--model",
            f"{user_module}:tiny",
            "--spec",
            spec,
            "--steps",
            "5",
            "--out",
            str(tmp_path / label),
            "--json",
        ]
    )
    runs[label] = json.loads(capsys.readouterr().out)
  assert runs["preset"]["mean_power_w"] == runs["file"]["mean_power_w"]
  data["static_power_w"] = 0.5  # a hotter chip: 0.45 W more at every step
  path.write_text(json.dumps(data))
  cli.main(
      [
          "simulate",
          "steady",
          "--model",
          f"{user_module}:tiny",
          "--spec",
          str(path),
          "--steps",
          "5",
          "--out",
          str(tmp_path / "hot"),
          "--json",
      ]
  )
  hot = json.loads(capsys.readouterr().out)
  assert hot["mean_power_w"] - runs["preset"]["mean_power_w"] == pytest.approx(0.45, rel=1e-3)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(warp_drive=1.0), "unknown NNPSpec field(s) ['warp_drive']"),
        (lambda d: d.pop("tdp_w"), "missing NNPSpec field(s) ['tdp_w']"),
        (lambda d: d.update(clock_hz=-1.0), "clock_hz = -1.0; expected a finite value >= 0"),
        (lambda d: d["energy_per_mac_j"].pop("int4"), "energy_per_mac_j = "),
        (lambda d: d.update(num_pes="many"), "num_pes = 'many'; expected a number"),
    ],
)
def test_bad_spec_files_name_the_file_and_field(tmp_path, edit, message, capsys):
  from aprec.hardware import edge_npu, save_spec

  path = save_spec(edge_npu(), tmp_path / "npu.json")
  data = json.loads(path.read_text())
  edit(data)
  path.write_text(json.dumps(data))
  err = _error(
      ["simulate", "steady", "--spec", str(path), "--steps", "5", "--out", str(tmp_path / "o")],
      capsys,
  )
  assert str(path) in err and message in err
  assert not (tmp_path / "o").exists()  # refused before any work


def test_nnpspec_objects_wherever_a_preset_name_is():
  from aprec.app import config
  from aprec.hardware import datacenter_gpu, edge_npu, get_spec
  from aprec.planning import Budget

  spec = edge_npu()
  assert spec == get_spec("edge_npu") and hash(spec) == hash(get_spec("edge_npu"))
  assert spec != datacenter_gpu()
  assert Budget("energy_j", 1e-9, spec) == Budget("energy_j", 1e-9, edge_npu())
  assert str(Budget("energy_j", 1e-9, spec)) == "energy_j=1e-09@edge_npu"
  cfg = config.resolve({"spec": spec})
  assert cfg.spec == spec
  assert json.loads(json.dumps(cfg.to_dict()))["spec"]["name"] == "edge_npu"


def test_default_budgets_and_deploy_take_an_nnpspec(cnn_ops):
  from aprec.hardware import edge_npu
  from aprec.planning import default_budgets
  from aprec.planning import budget_used
  from aprec.sensitivity.profile import Estimate, make_profile

  est = Estimate(
      delta_loss=np.zeros((len(cnn_ops), 7)), stderr=np.zeros((len(cnn_ops), 7)), n_samples=1
  )
  prof = make_profile(
      model="cnn",
      ops=cnn_ops,
      estimates={"perturbation": est},
      dataset="toy",
      n_batches=1,
      batch_size=1,
      baseline_loss=0.0,
  )
  by_object = default_budgets(prof, "energy_j", 3, spec_name=edge_npu())
  by_name = default_budgets(prof, "energy_j", 3, spec_name="edge_npu")
  assert by_object == by_name
  fp32 = budget_used(prof.ops, np.zeros(len(cnn_ops), np.int32), "energy_j", 1, edge_npu())
  assert by_object[-1] == pytest.approx(fp32)
