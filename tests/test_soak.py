"""`hyperthumbnail bench soak` (issue #26): the short variant for `make test` (a minute of traffic
of a few sizes through `serve --replicas 2` behind nginx, one replica SIGKILLed: nothing lost,
every response equal to the in-process result, memory levelled off, nothing left behind; about
two minutes), the mix and schedule, and the chart's memory settings against the committed
long run (`deploy/chart_sizing.py`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperthumbnail.benchmarks.soak_mix import MIX, SizeClass, build_pool, largest, parse_mix, schedule, source_photos

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import chart_sizing  # noqa: E402


def test_mix_is_weighted_towards_phone_photos_and_spans_web_to_50mp():
    assert min(c.megapixels for c in MIX) <= 0.31 and max(c.megapixels for c in MIX) >= 50
    phone = sum(c.weight for c in MIX if "phone" in c.name)
    assert phone == max(phone, *(c.weight for c in MIX if "phone" not in c.name))
    assert abs(sum(c.weight for c in MIX) - 1) < 1e-9


def test_parse_mix_accepts_names_and_sizes_and_refuses_nonsense():
    assert parse_mix("web_0.3mp,big=800x600:2") == (MIX[0], SizeClass("big", 800, 600, 2.0))
    for bad in ("nope", "x=12:1", "x=4x4:1", "x=64x64:0", ","):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_schedule_is_seeded_and_follows_the_weights():
    pool = build_pool(parse_mix("a=64x48:3,b=128x96:1"), source_photos(), per_class=2, seed=1)
    jobs = list(schedule(pool, seed=5, limit=400))
    assert jobs == list(schedule(pool, seed=5, limit=400))
    assert pool[largest(pool)].size_class.name == "b"
    drawn = [pool[j.photo].size_class.name for j in jobs]
    assert 0.65 < drawn.count("a") / len(drawn) < 0.85  # weight 3 of 4
    assert {j.protocol for j in jobs} == {"http", "grpc"} and {j.op for j in jobs} == {"encode", "decode"}
    assert all(pool[j.photo].image.shape == (pool[j.photo].size_class.height, pool[j.photo].size_class.width, 3)
               for j in jobs)


def test_chart_memory_matches_the_committed_soak():
    """values.yaml / the KServe runtime hold what deploy/chart_sizing.py derives from soak.json."""
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "chart_sizing.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_chart_sizing_fails_when_the_chart_drifts(tmp_path, monkeypatch):
    values = tmp_path / "values.yaml"
    text = chart_sizing.VALUES.read_text()
    wanted = chart_sizing.sizing(chart_sizing.measured())
    values.write_text(text.replace(f"  sizeLimit: {wanted['shm']}\n", "  sizeLimit: 64Gi\n", 1))
    monkeypatch.setattr(chart_sizing, "_PLACES", [(values, p, k) for f, p, k in chart_sizing._PLACES
                                                  if f == chart_sizing.VALUES])
    monkeypatch.setattr(chart_sizing, "ROOT", tmp_path)
    assert [d for d in chart_sizing.differences(wanted) if "64Gi" in d]
    bigger = dict(chart_sizing.measured(), peak_per_replica_bytes=chart_sizing.measured()["peak_per_replica_bytes"] * 4)
    assert chart_sizing.sizing(bigger)["memory"] != wanted["memory"]


@pytest.mark.server
def test_short_soak_through_two_replicas_with_a_replica_killed(tmp_path):
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (make test installs it)")
    out = tmp_path / "soak"
    run = subprocess.run([sys.executable, "-m", "hyperthumbnail", "bench", "soak", "--minutes", "1", "--replicas", "2",
                          "--mix", "web_0.3mp,hd_2mp,tile=1280x960:1", "--per-class", "1", "--faults", "kill_replica",
                          "--sample-every", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    result = json.loads((out / "soak.json").read_text())
    assert run.returncode == 0, (run.stdout[-2000:], result["acceptance"], result.get("error_examples"))
    assert result["requests"] >= 20 and result["errors"] == 0 and result["mismatches"] == 0
    assert result["compared"] == result["requests"]
    kill = result["faults"][0]
    assert kill["fault"] == "kill_replica" and kill["back_after_s"] is not None and kill["new_pid"] != kill["pid"]
    assert result["shm_leftover_bytes"] == 0 and result["processes_left"] == []
    assert result["memory"]["levels_off"] and len(result["memory_samples"]) >= 30
    assert (out / "soak.png").stat().st_size > 10_000


def test_the_sampler_carries_a_peak_between_two_samples_into_the_next(monkeypatch):
    """A request's buffers can come and go inside one sample's period (the flake a 1-minute soak had:
    its first third missed the opening's peak): the watcher's peak reaches the next sample, only it."""
    from hyperthumbnail.benchmarks import soak_probe

    me = os.getpid()
    pss = {"now": 100}
    monkeypatch.setattr(soak_probe, "find_replicas", lambda pid: [soak_probe.Replica(me, 0.0, 9000, "none")])
    monkeypatch.setattr(soak_probe, "tree_pss", lambda pid: pss["now"])
    monkeypatch.setattr(soak_probe, "tree_memory", lambda pid: {"rss": pss["now"], "pss": pss["now"], "fds": 0,
                                                                "processes": 1, "pss_by_model": {}})
    monkeypatch.setattr(soak_probe, "shm_bytes", lambda prefixes=None: 0)
    monkeypatch.setattr(soak_probe, "triton_counters", lambda port: {"queue_us": 0.0, "requests": 0.0})
    sampler = soak_probe.Sampler(me, every_s=3600, peak_every_s=0.01).start(time.monotonic())
    try:
        pss["now"] = 500
        time.sleep(0.3)
        pss["now"] = 100
        time.sleep(0.1)
        first, second = sampler.sample(), sampler.sample()
    finally:
        sampler.stop()
    assert first["server_tree_pss"] == 100 and first["server_tree_pss_peak"] == 500
    assert first["replicas"][0]["pss_peak"] == 500
    assert second["server_tree_pss_peak"] == 100 and second["replicas"][0]["pss_peak"] == 100


def test_every_deployment_gets_the_server_environment():
    """SERVER_ENV (tritonserver's malloc setting that stopped its growth in the soak) reaches the chart
    (through files/server.yaml, checked by test_deploy) and both KServe runtimes."""
    import yaml

    from hyperthumbnail.serving.server_flags import SERVER_ENV
    from hyperthumbnail.serving.server_runtime import server_environment

    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "hyperthumbnail" / "files" / "server.yaml").read_text())
    assert chart["env"] == SERVER_ENV
    assert "$server.env" in (ROOT / "deploy" / "helm" / "hyperthumbnail" / "templates" / "deployment.yaml").read_text()
    for name in ("servingruntime.yaml", "servingruntime-gpu.yaml"):
        runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / name).read_text())
        env = {e["name"]: e.get("value") for e in runtime["spec"]["containers"][0]["env"]}
        assert {k: env.get(k) for k in SERVER_ENV} == SERVER_ENV, name
    assert all(server_environment(base={})[k] == v for k, v in SERVER_ENV.items())
