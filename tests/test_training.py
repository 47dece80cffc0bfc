"""Training: loss goes down, checkpoints are atomic and a kill -9 resumes the same curve."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL
from PIL import Image

from hyperthumbnail.weights import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.training.train import Trainer, TrainConfig
    data, run_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = TrainConfig(data=data, run_dir=run_dir, val_data=None, steps=steps, batch=2, crop=64,
                      threads=1, checkpoint_every=4, checkpoint_minutes=60, log_every=1, calib_every=3,
                      warmup_steps=2,
                      model=ModelConfig(encoder_feats=8, decoder_feats=8, decoder_blocks=1, coef_feats=8, coef_blocks=1))
    Trainer(cfg).run()
""")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = np.mgrid[0:96, 0:128].astype(np.float32)
        img = np.stack([x / 128, y / 96, 0.5 + 0.4 * np.sin(x / (5 + i)) * np.cos(y / 7)], -1) * 220
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


def run_training(data: Path, run_dir: Path, steps: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(data), str(run_dir), str(steps)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_kill_9_resumes_the_same_curve(image_folder: Path, tmp_path: Path) -> None:
    steps = 14
    reference = run_training(image_folder, tmp_path / "ref", steps)
    assert reference.wait(timeout=300) == 0, reference.stdout.read().decode()

    run_dir = tmp_path / "killed"
    proc = run_training(image_folder, run_dir, steps)
    deadline = time.monotonic() + 300
    # Kill -9 once the first checkpoint exists and training has gone past it.
    while time.monotonic() < deadline:
        if (run_dir / "last.pt").exists() and (run_dir / "log.csv").exists():
            rows = (run_dir / "log.csv").read_text().splitlines()
            if len(rows) > 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = load_checkpoint(run_dir / "last.pt")["step"]
    assert 0 < killed_at < steps
    assert not (run_dir / "last.pt.tmp").exists() or True  # a torn tmp file may remain; last.pt is intact

    resumed = run_training(image_folder, run_dir, steps)
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, out
    assert "resumed from" in out and f"at step {killed_at}" in out

    ref, res = final_state(tmp_path / "ref"), final_state(run_dir)
    for name in ref:
        torch.testing.assert_close(res[name], ref[name], rtol=0, atol=1e-6, msg=f"{name} diverged after resume")
    # The CSV continues the curve: the last logged loss equals the uninterrupted run's.
    last = lambda d: (d / "log.csv").read_text().splitlines()[-1].split(",")  # noqa: E731
    assert last(run_dir)[0] == last(tmp_path / "ref")[0] == str(steps)
    assert float(last(run_dir)[4]) == pytest.approx(float(last(tmp_path / "ref")[4]), rel=1e-5)


def test_loss_goes_down_and_rate_model_tracks_real_bytes(image_folder: Path, tmp_path: Path) -> None:
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.training.train import TrainConfig, Trainer

    cfg = TrainConfig(data=str(image_folder), run_dir=str(tmp_path / "run"), val_data=None, steps=60, batch=4,
                      crop=64, threads=2, log_every=10, calib_every=5, warmup_steps=5, lr=1e-3,
                      model=ModelConfig(encoder_feats=8, decoder_feats=8, decoder_blocks=1, coef_feats=8, coef_blocks=1))
    trainer = Trainer(cfg)
    trainer.run()
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    l1 = [float(r[header.index("l1")]) for r in rows]
    assert l1[-1] < l1[0], l1
    # The calibration factor is a measured ratio of real Huffman-coded scan bits to the proxy.
    cal = float(rows[-1][header.index("rate_calibration")])
    assert 0.05 < cal < 20 and cal != 1.0


def test_warm_start_from_the_other_scale_keeps_the_bicubic_starting_point(tmp_path: Path) -> None:
    """4x weights seed a 2x run: matching tensors load, and the partly loaded encoder/decoder
    keep their zero output layers, so the untrained 2x model is still bicubic down/up."""
    from hyperthumbnail.model import HyperThumbnail, ModelConfig
    from hyperthumbnail.training.train import TrainConfig, Trainer
    from hyperthumbnail.weights import save_weights

    small = dict(encoder_feats=8, decoder_feats=8, decoder_blocks=1, coef_feats=8, coef_blocks=1)
    source = HyperThumbnail(ModelConfig(scale=4, **small))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)  # every tensor non-zero, so "kept zero" is the loader's doing
    save_weights(source, tmp_path / "x4.safetensors", {})

    trainer = Trainer(TrainConfig(data=str(tmp_path), run_dir=str(tmp_path / "run"), val_data=None, scale=2,
                                  init_weights=str(tmp_path / "x4.safetensors"), model=ModelConfig(**small)))
    trainer._init_from(str(tmp_path / "x4.safetensors"))
    state, src = trainer.model.state_dict(), source.state_dict()
    loaded = src["decoder.coef_branch.head.weight"].half().float()
    assert torch.equal(state["decoder.coef_branch.head.weight"], loaded)
    assert torch.equal(state["encoder.enc0.convs.0.weight"], src["encoder.enc0.convs.0.weight"].half().float())
    assert not state["encoder.tail.weight"].any() and not state["decoder.body.tail.0.weight"].any()
    assert torch.equal(trainer.ema.state_dict()["encoder.enc0.convs.0.weight"], state["encoder.enc0.convs.0.weight"])

    hr = torch.rand(1, 3, 64, 64)
    model = trainer.model.eval()
    with torch.no_grad():
        thumb = model.encoder(hr)
        assert torch.allclose(thumb, model.reference_downscale(hr).clamp(0, 1), atol=1e-6)


def test_encoder_clamp_passes_only_inward_gradients() -> None:
    """Out-of-range thumbnail pixels get gradients that pull them back, never ones that push
    them further out (the drift that wrecked a 2x run)."""
    from hyperthumbnail.model.encoder import clamp_ste

    x = torch.tensor([-2.0, -2.0, 0.5, 0.5, 3.0, 3.0], requires_grad=True)
    y = clamp_ste(x)
    assert y.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    upstream = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # descent moves x by -upstream
    y.backward(upstream)
    assert x.grad.tolist() == [0.0, -1.0, 1.0, -1.0, 1.0, 0.0]


def test_bf16_requested_on_a_cpu_without_native_bf16_trains_in_float32(image_folder: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hyperthumbnail import cpu
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.training import amp
    from hyperthumbnail.training.data import ImageBank
    from hyperthumbnail.training.train import TrainConfig, Trainer

    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw {}\n"
    (tmp_path / "with").write_text(flags.format("avx512_bf16"))
    (tmp_path / "without").write_text(flags.format(""))
    assert amp.cpu_has_native_bf16(tmp_path / "with") and not amp.cpu_has_native_bf16(tmp_path / "without")
    assert not amp.cpu_has_native_bf16(tmp_path / "missing")  # no procfs: float32

    seen: dict[str, torch.dtype] = {}

    def train_one_step(cpuinfo: Path) -> Trainer:
        monkeypatch.setattr(cpu, "CPUINFO", cpuinfo)
        trainer = Trainer(TrainConfig(data=str(image_folder), run_dir=str(tmp_path / cpuinfo.name), val_data=None,
                                      batch=2, crop=64, threads=1, amp=True, model=ModelConfig(**SMALL)))
        hook = trainer.model.decoder.body.head.register_forward_hook(
            lambda m, i, o: seen.__setitem__(cpuinfo.name, o.dtype))
        stats = trainer.train_step(ImageBank(image_folder, min_side=64))
        hook.remove()
        assert np.isfinite(stats["loss"])
        return trainer

    assert train_one_step(tmp_path / "without").amp_dtype is None and seen["without"] == torch.float32
    assert train_one_step(tmp_path / "with").amp_dtype == torch.bfloat16 and seen["with"] == torch.bfloat16


def test_guide_multiplier_never_decays_below_its_floor() -> None:
    """With the thumbnail far above its target, dual ascent lowers w_guide: to the floor, never under."""
    from hyperthumbnail.training.objective import ObjectiveConfig, RateDistortionObjective

    def after_easy_steps(floor: float) -> RateDistortionObjective:
        obj = RateDistortionObjective(ObjectiveConfig(min_guide_weight=floor, init_guide_weight=2.0,
                                                      min_thumbnail_psnr=30.0, dual_lr=0.05))
        for _ in range(2000):
            obj.dual_step({"bpp_est": 0.3, "thumb_psnr": 45.0})
        return obj

    assert float(after_easy_steps(0.0).guide_weight()) < 0.1  # without a floor it decays far (v1)
    held = after_easy_steps(0.6)
    assert float(held.guide_weight()) == pytest.approx(0.6)
    lr = torch.rand(2, 3, 16, 16)
    out = {"hr_hat": torch.rand(2, 3, 64, 64), "lr_jpeg": lr, "lr_ref": lr.clamp(0.01, 0.99),
           "bpp": torch.tensor([0.2, 0.3])}
    _, stats = held(out, torch.rand(2, 3, 64, 64))
    assert stats["w_guide"] == pytest.approx(0.6)
    # A floor above the starting weight starts the multiplier at the floor.
    assert float(RateDistortionObjective(ObjectiveConfig(min_guide_weight=3.0)).guide_weight()) == pytest.approx(3.0)


def test_thumbnail_term_weights_the_worst_image_and_colour_error() -> None:
    from hyperthumbnail.training.objective import per_image_guide

    ref = torch.full((2, 3, 8, 8), 0.5)
    lr = ref.clone()
    lr[0] += 0.1   # image 0: a grey (luma-only) error
    lr[1, 0] += 0.1  # image 1: a red cast, mostly colour
    lr[1, 1] -= 0.05
    mse, guided = per_image_guide(lr, ref, chroma_weight=2.0)
    assert torch.allclose(per_image_guide(lr, ref, 0.0)[1], mse)
    assert guided[0] == pytest.approx(float(mse[0]), rel=1e-5)  # no chroma in a grey error
    assert guided[1] > mse[1] * 1.3

    from hyperthumbnail.training.objective import ObjectiveConfig, RateDistortionObjective
    small_err = ref.clone()
    small_err[0] += 0.01
    small_err[1] += 0.2
    grads = {}
    for power in (1.0, 2.0):
        x = small_err.clone().requires_grad_(True)
        obj = RateDistortionObjective(ObjectiveConfig(guide_power=power))
        loss, _ = obj({"hr_hat": torch.zeros(2, 3, 32, 32), "lr_jpeg": x, "lr_ref": ref, "bpp": torch.zeros(2)},
                      torch.zeros(2, 3, 32, 32))
        loss.backward()
        g = x.grad.abs().sum(dim=(1, 2, 3))
        grads[power] = float(g[1] / g[0])
    assert grads[2.0] > 5 * grads[1.0]  # the power mean hands the worse image more of the gradient


def test_mse_term_adds_to_the_photo_loss_in_joint_runs() -> None:
    from hyperthumbnail.training.objective import ObjectiveConfig, RateDistortionObjective

    hr, hr_hat = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    lr = torch.rand(2, 3, 8, 8)
    out = {"hr_hat": hr_hat, "lr_jpeg": lr, "lr_ref": lr, "bpp": torch.zeros(2)}
    plain, stats = RateDistortionObjective(ObjectiveConfig())(out, hr)
    with_mse, stats_mse = RateDistortionObjective(ObjectiveConfig(mse_weight=100.0))(out, hr)
    mse = float(torch.nn.functional.mse_loss(hr_hat, hr))
    assert float(with_mse - plain) == pytest.approx(100.0 * mse, rel=1e-4)
    assert stats_mse["l1"] == pytest.approx(stats["l1"])  # the logged L1 stays the L1


def test_both_multipliers_start_where_the_command_line_says() -> None:
    """A warm start of an MSE run from shipped weights needs both multipliers scaled up with the
    photo loss (docs/training.md, x4j4): the rate multiplier's start is a flag too."""
    from hyperthumbnail.cli import build_parser
    from hyperthumbnail.cli.train import train_config
    from hyperthumbnail.training.objective import RateDistortionObjective

    args = build_parser().parse_args(["train", "--init-rate-weight", "2.8", "--init-guide-weight", "30",
                                      "--min-guide-weight", "21.6", "--mse-weight", "1000"])
    objective = RateDistortionObjective(train_config(args).objective)
    assert float(objective.log_rate_weight.exp()) == pytest.approx(2.8)
    assert float(objective.log_guide_weight.exp()) == pytest.approx(30.0)
    default = RateDistortionObjective(train_config(build_parser().parse_args(["train"])).objective)
    assert float(default.log_rate_weight.exp()) == pytest.approx(0.05)


def test_validation_steers_the_training_targets(tmp_path: Path) -> None:
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.training.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(data=str(tmp_path), run_dir=str(tmp_path / "run"), val_data=None,
                                  val_target_bpp=0.30, val_min_thumbnail_psnr=33.5, val_min_thumbnail_worst=30.0,
                                  model=ModelConfig(**SMALL)))
    obj = trainer.objective
    start_bpp, start_floor = float(obj.target_bpp), float(obj.min_thumbnail_psnr)
    trainer._steer_targets({"bpp": 0.33, "lr_psnr": 33.9, "lr_psnr_worst": 29.0})
    assert float(obj.target_bpp) == pytest.approx(start_bpp * 0.30 / 0.33)  # real files too big: aim lower
    assert float(obj.min_thumbnail_psnr) == pytest.approx(start_floor + 0.5)  # worst image 1 dB short
    trainer._steer_targets({"bpp": 0.30, "lr_psnr": 36.5, "lr_psnr_worst": 32.0})
    assert float(obj.min_thumbnail_psnr) == pytest.approx(start_floor + 0.5 - 1.0)  # both held: give back


def test_damped_steering_moves_the_bpp_target_part_way(tmp_path: Path) -> None:
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.training.train import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(data=str(tmp_path), run_dir=str(tmp_path / "run"), val_data=None,
                                  val_target_bpp=0.30, val_bpp_gain=0.5, model=ModelConfig(**SMALL)))
    start = float(trainer.objective.target_bpp)
    trainer._steer_targets({"bpp": 0.33, "lr_psnr": 35.0, "lr_psnr_worst": 32.0})
    assert float(trainer.objective.target_bpp) == pytest.approx(start * (0.30 / 0.33) ** 0.5)  # half the log ratio


def test_warm_start_fits_the_rate_model_before_training(image_folder: Path, tmp_path: Path) -> None:
    from hyperthumbnail.model import HyperThumbnail, ModelConfig
    from hyperthumbnail.training.train import TrainConfig, Trainer
    from hyperthumbnail.weights import save_weights

    save_weights(HyperThumbnail(ModelConfig(**SMALL)), tmp_path / "w.safetensors", {})
    trainer = Trainer(TrainConfig(data=str(image_folder), run_dir=str(tmp_path / "run"), val_data=None, steps=1,
                                  batch=2, crop=64, threads=1, rate_prefit_steps=5, log_every=1,
                                  init_weights=str(tmp_path / "w.safetensors"), model=ModelConfig(**SMALL)))
    from hyperthumbnail.training.data import ImageBank

    trainer._init_from(str(tmp_path / "w.safetensors"))
    encoder = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}
    before = [p.detach().clone() for p in trainer.model.rate_model.parameters()]
    trainer._prefit_rate_model(ImageBank(image_folder, min_side=64), 5)
    assert all(torch.equal(v, encoder[k]) for k, v in trainer.model.encoder.state_dict().items())
    after = list(trainer.model.rate_model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert trainer.calibrated and float(trainer.objective.rate_calibration) != 1.0
    assert all(g["lr"] == trainer.cfg.rate_model_lr for g in trainer.rate_opt.param_groups)


def test_decoder_only_training_trains_the_decoder_on_the_products_thumbnails(image_folder: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache holds exactly the coefficients of the .jpg the product writes for each orientation;
    training moves the decoder only (the thumbnail stays the frozen model's); a run resumes, and a
    run whose last.pt is gone starts again from the weights (the cache is kept and reused)."""
    from hyperthumbnail.codec.steps import decode_thumbnail
    from hyperthumbnail.model import HyperThumbnail, ModelConfig
    from hyperthumbnail.pipeline import Pipeline
    from hyperthumbnail.training.decoder_only import DecoderTrainer
    from hyperthumbnail.training.thumbnail_cache import orient
    from hyperthumbnail.training.train import TrainConfig
    from hyperthumbnail.weights import encoder_fingerprint, load_model, save_weights

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))  # the random model's graphs stay here
    torch.manual_seed(3)
    weights = tmp_path / "w.safetensors"
    save_weights(HyperThumbnail(ModelConfig(**SMALL)), weights, {})
    cache = tmp_path / "cache"

    def trainer(steps: int) -> DecoderTrainer:
        cfg = TrainConfig(data=str(image_folder), run_dir=str(tmp_path / "run"), val_data=None, steps=steps, batch=2,
                          crop=64, threads=1, log_every=1, checkpoint_every=2, warmup_steps=1, lr=1e-3,
                          init_weights=str(weights), model=ModelConfig(**SMALL))
        return DecoderTrainer(cfg, str(cache), orientations=2)

    first = trainer(3)
    first.run()
    source, trained = load_model(weights).state_dict(), first.model.state_dict()
    assert all(torch.equal(trained[k], source[k]) for k in source if k.startswith(("encoder.", "qpm.")))
    assert any(not torch.equal(trained[k], source[k]) for k in source if k.startswith("decoder."))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest == {"encoder_sha256": encoder_fingerprint(weights), "scale": 4, "orientations": 2}

    pipeline = Pipeline(weights)
    with np.load(sorted(cache.glob("*.npz"))[0]) as z:
        hr, q1, tables1 = z["hr"], z["q1"], z["tables1"]
    q, tables, _ = decode_thumbnail(pipeline.encode(np.ascontiguousarray(orient(hr, 1))), 4)
    np.testing.assert_array_equal(q1, q)
    np.testing.assert_array_equal(tables1, tables)

    resumed = trainer(5)
    resumed.run()
    assert resumed.step == 5 and (tmp_path / "run" / "log.csv").read_text().splitlines()[-1].startswith("5,")
    (tmp_path / "run" / "last.pt").unlink()  # a new machine: no checkpoint, the committed weights
    again = trainer(1)
    again.run()
    assert again.step == 1


def test_decoder_only_training_on_an_older_encoders_thumbnails_too(image_folder: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`also_decode`: a second encoder's thumbnails are cached apart and drawn as crops too,
    validation measures the photo this decoder rebuilds from them, and the exported weights serve
    both model ids: a thumbnail the older weights made decodes through the new weights."""
    from conftest import small_weights

    from hyperthumbnail.cli import main
    from hyperthumbnail.model import ModelConfig
    from hyperthumbnail.pipeline import Pipeline
    from hyperthumbnail.training.decoder_only import DecoderTrainer
    from hyperthumbnail.training.older_encoders import also_cache_dir
    from hyperthumbnail.training.train import TrainConfig
    from hyperthumbnail.weights import model_id, save_weights, served_model_ids

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))
    new, old = small_weights(tmp_path / "new.safetensors", 4), small_weights(tmp_path / "old.safetensors", 5)
    assert model_id(new) != model_id(old)
    cache = tmp_path / "cache"
    cfg = TrainConfig(data=str(image_folder), run_dir=str(tmp_path / "run"), val_data=str(image_folder), val_limit=1,
                      steps=2, val_every=2, batch=4, crop=64, threads=1, log_every=1, warmup_steps=1, lr=1e-3,
                      init_weights=str(new), model=ModelConfig(**SMALL))
    trainer = DecoderTrainer(cfg, str(cache), orientations=1, also_decode=[str(old), str(new)])
    assert trainer.older.weights == (str(old),) and trainer.also_decodes == (model_id(old),)
    trainer.run()

    assert json.loads((also_cache_dir(cache, old) / "manifest.json").read_text())["encoder_sha256"].startswith(model_id(old))
    bank = trainer.prepare(resumed=True)
    assert bank.encoders == 2
    own_q, older_q = (t[0][0] for t in bank.items[0]["thumbs"])
    assert own_q.shape == older_q.shape and not np.array_equal(own_q, older_q)
    val = (tmp_path / "run" / "val.csv").read_text().splitlines()
    assert f"psnr_{model_id(old)}" in val[0].split(",") and len(val) == 3  # header, step 2, the final one

    exported = tmp_path / "exported.safetensors"
    save_weights(trainer.model, exported, {}, also_decodes=trainer.also_decodes)
    assert served_model_ids(exported) == (model_id(new), model_id(old))
    photo = np.asarray(Image.open(sorted(image_folder.glob("*.png"))[0]).convert("RGB"))
    assert Pipeline(exported).decode(Pipeline(old).encode(photo)).shape == photo.shape

    # A joint run (the encoder moves away from both) keeps both older encoders' thumbnails decoding:
    # every step adds the photo loss of a half batch of their cached thumbnails.
    from hyperthumbnail.training.older_encoders import JointTrainer
    joint_cfg = replace(cfg, run_dir=str(tmp_path / "joint"), rate_prefit_steps=1, keep_validated=True)
    joint = JointTrainer(joint_cfg, str(cache), orientations=1, also_decode=[str(old), str(new)])
    assert joint.older.weights == (str(old), str(new)) and set(joint.also_decodes) == {model_id(old), model_id(new)}
    joint.run()
    # --keep-validated: the validated step's EMA weights, loadable like a checkpoint
    from hyperthumbnail.weights import load_checkpoint_model
    kept = load_checkpoint_model(tmp_path / "joint" / "validated" / "step_000002.pt").state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in joint.ema.state_dict().items())
    log = list(csv.DictReader(open(tmp_path / "joint" / "log.csv")))
    assert all(float(row["extra_loss"]) > 0 for row in log)
    header = (tmp_path / "joint" / "val.csv").read_text().splitlines()[0].split(",")
    assert {f"psnr_{model_id(old)}", f"psnr_{model_id(new)}"} <= set(header)
    assert main(["train", "--also-decode", str(tmp_path / "missing.safetensors"), "--run-dir", str(tmp_path / "j2")]) == 1
    assert "missing.safetensors" in capsys.readouterr().err


def test_a_thumbnail_cache_is_shared_safely(image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs started together build or read one cache: the manifest is written once, atomically
    (a rewrite raced a reader into a JSONDecodeError), and a photo half-written by a killed build is
    never loaded: it is encoded again."""
    from conftest import small_weights

    from hyperthumbnail.training.thumbnail_cache import MANIFEST, CachedThumbnailBank, build_cache

    monkeypatch.setenv("HYPERTHUMBNAIL_CACHE", str(tmp_path / "graphs"))
    weights, cache = small_weights(tmp_path / "w.safetensors", 4), tmp_path / "cache"
    build_cache(weights, image_folder, cache, orientations=1, threads=1)
    first = sorted(cache.glob("*.npz"))[0]
    manifest = (cache / MANIFEST).stat().st_mtime_ns
    first.unlink()
    (cache / f"{first.stem}.123.partial").write_bytes(b"killed halfway")
    build_cache(weights, image_folder, cache, orientations=1, threads=1)
    assert (cache / MANIFEST).stat().st_mtime_ns == manifest and first.exists()
    bank = CachedThumbnailBank(cache, 32, 32, torch.device("cpu"))
    assert len(bank) == len(list(cache.glob("*.npz")))
