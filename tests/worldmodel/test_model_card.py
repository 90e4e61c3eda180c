import json
import shutil

import pytest

from worldmodel.checkpoint import load_checkpoint
from games.crafter.model_card import (README_BEGIN, README_END, ModelCardError, collect_reports,
                                   readme_block)
from games.crafter.model_card import main as card_main


def test_consecutive_training_logs_join_into_one_step_axis(tmp_path):
    from games.crafter.model_card import join_training_logs, trained_steps

    first, resumed, restarted = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    first.write_text("\n".join(json.dumps({"step": s, "loss": 1.0}) for s in (50, 100)))
    resumed.write_text(json.dumps({"step": 150, "loss": 1.0}))  # --resume: the counter goes on
    restarted.write_text(json.dumps({"step": 50, "loss": 1.0}))  # --init: counts from 0 again
    rows, starts = join_training_logs([first, resumed, restarted])
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    assert starts == [100, 150]
    assert trained_steps({"train_step": 7}) == "7"
    assert trained_steps({"train_step": 50, "init_steps": 150, "init_from": "x"}) == "200 (150 up to x, then 50)"


BENCH = {"params": 1000, "device": "cpu", "denoiser_passes_per_frame": 2, "command": "python -m worldmodel.evaluation.bench",
         "results": [{"batch": b, "fps_per_world_median": 25.0 / b, "imagined_fps_median": 25.0 * x,
                      "imagined_fps_vs_batch1": x, "peak_rss_mb": 100.0,
                      "stage_ms": {"denoiser": 30.0, "cache_write": 8.0, "decoder": 0.1, "overhead": 1.0}}
                     for b, x in ((1, 1.0), (32, 3.5))]}


@pytest.fixture
def card_setup(semantic_report, labelled_crafter, tmp_path):
    ckpt, out, report = semantic_report
    eval_dir = ckpt / "eval"
    shutil.copytree(out, eval_dir)
    (eval_dir / "bench.json").write_text(json.dumps(BENCH))
    (eval_dir / "levers" / "more_steps").mkdir(parents=True)
    shutil.copy(out / "report.json", eval_dir / "levers" / "more_steps" / "report.json")
    tiles_report = tmp_path / "tiles.json"
    tiles_report.write_text(json.dumps({**labelled_crafter.report, "command": "python -m games.crafter.tiles",
                                        "bank_tiles": 10, "train_episodes": 3, "heldout_episodes": 3,
                                        "damage_rejected": {"blur3": 0.9}}))
    return ckpt, eval_dir, tiles_report


def test_card_is_made_from_reports_and_names_their_commands(card_setup, tmp_path):
    ckpt, eval_dir, tiles_report = card_setup
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nold figures\n{README_END}\n\nafter\n")
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / i, "copy_mse": 0.5})
                                                 for i in range(1, 5)))
    card = card_main(["--checkpoint", str(ckpt), "--tiles-report", str(tiles_report),
                      "--readme", str(readme), "--train-log", str(tmp_path / "log.jsonl")])
    report = json.loads((eval_dir / "report.json").read_text())
    assert f"Command: `{report['command']}`" in card
    assert "Command: `python -m worldmodel.evaluation.bench`" in card and "Command: `python -m games.crafter.tiles`" in card
    pm = report["semantic"]["permanence"]["model"]["4"]
    assert f"| 4 | {pm['non_grass']:.3f} (n={pm['n_non_grass']}) |" in card
    m = report["results"]["all"]["1"]
    assert f"| 1 | all | {m['n']} | {m['model']['psnr']:.2f} | {m['baseline']['psnr']:.2f} |" in card
    assert "Batch 32: 3.50x batch 1's imagined fps (target >= 3x: met)" in card
    assert "One frame per step: 25.0 fps (target >= 25: met)" in card
    assert "| shipped default | " in card and "| more_steps | " in card  # the levers table
    assert "Trained 7 steps" in card and (ckpt / "train_curve.png").stat().st_size > 1000
    text = readme.read_text()
    assert "old figures" not in text and text.endswith(f"{README_END}\n\nafter\n")
    assert "Carried non-grass cells drawn right" in text
    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert metrics["train_step"] == 7 and "permanence" in metrics["semantic"]
    load_checkpoint(ckpt)  # still a loadable checkpoint


def test_a_report_without_its_command_stops_the_card(card_setup):
    ckpt, eval_dir, tiles_report = card_setup
    bench = dict(BENCH)
    del bench["command"]
    (eval_dir / "bench.json").write_text(json.dumps(bench))
    with pytest.raises(ModelCardError, match="bench.*names no command"):
        card_main(["--checkpoint", str(ckpt), "--tiles-report", str(tiles_report)])


def test_a_figure_missing_from_its_report_stops_the_card(card_setup):
    ckpt, eval_dir, tiles_report = card_setup
    report = json.loads((eval_dir / "report.json").read_text())
    del report["semantic"]["revealed"]
    (eval_dir / "report.json").write_text(json.dumps(report))
    with pytest.raises(ModelCardError, match="report evaluation .* has no semantic/revealed"):
        card_main(["--checkpoint", str(ckpt), "--tiles-report", str(tiles_report)])
    (eval_dir / "report.json").unlink()
    with pytest.raises(ModelCardError, match="no evaluation report"):
        card_main(["--checkpoint", str(ckpt)])


def test_the_readme_results_are_the_shipped_reports():
    """README.md's results block is what the generator writes from the committed reports: no
    figure in it was typed by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    from simulator.session import DEFAULT_CHECKPOINT

    ckpt = DEFAULT_CHECKPOINT.relative_to(root)
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        block = readme_block(ckpt, collect_reports(ckpt, None, None))
    finally:
        os.chdir(cwd)
    assert block in (root / "README.md").read_text()
