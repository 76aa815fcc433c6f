"""The efficiency levers and distillation: general training options, each doing what it says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from ferbench.cli import app
from ferbench.config import TrainConfig
from ferbench.device import resolve_runtime
from ferbench.infer.calibration import tempered
from ferbench.infer.predictor import Predictor
from ferbench.models import create_model
from ferbench.models.preprocess import Preprocess
from ferbench.train import distill
from ferbench.train.budget import speedrun_budget
from ferbench.train.engine import Trainer, build_optimizer, dirac_init

cli = CliRunner()
SMALL = {"name": "vggfer_s", "input_size": 16, "args": {"widths": [8, 16, 32, 64]}}


def experiment(tmp_path: Path, name: str, model: dict, **train) -> Path:
    spec = {
        "name": name,
        "data": {"kind": "synthetic", "n_per_class": 12, "size": 16},
        "models": [model],
        "train": {"epochs": 2, "batch_size": 16, "seed": 0, **train},
        "eval": {"speed": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(file: Path, results: Path, *args: str):
    return cli.invoke(app, ["run", str(file), "--results", str(results), *args])


def test_norm_biases_get_their_own_learning_rate():
    model = create_model("vggfer_s", num_classes=7, widths=(8, 16, 32, 64))
    groups = build_optimizer(model, TrainConfig(norm_bias_lr=64.0)).param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 64.0]
    assert len(groups[2]["params"]) == 8  # one bias per BatchNorm
    assert len(build_optimizer(model, TrainConfig()).param_groups) == 2


def test_dirac_init_makes_convolutions_identities():
    model = create_model("vggfer_s", num_classes=7, widths=(8, 16, 32, 64))
    assert dirac_init(model) == 8
    conv = model[3]  # the second convolution of the first stage, 8 -> 8
    x = torch.randn(1, 8, 6, 6)
    assert torch.allclose(torch.nn.functional.conv2d(x, conv.weight, padding=1), x, atol=1e-6)


def test_alternating_flips_mirror_each_face_every_other_epoch():
    model = create_model("vggfer_s", num_classes=7, widths=(8, 16, 32, 64))
    runtime = resolve_runtime("cpu", "off", "off")
    trainer = Trainer(model, Preprocess(16, 1, (0.5,), (0.5,)), TrainConfig(seed=3), runtime)
    first, second, third = (trainer._flip_plan(1000, e) for e in range(3))
    assert torch.equal(first, ~second) and torch.equal(first, third)
    assert 400 < int(first.sum()) < 600


def test_ema_weights_are_validated_and_checkpointed(tmp_path):
    results = tmp_path / "r"
    result = run(experiment(tmp_path, "avg", SMALL, ema=0.9), results)
    assert result.exit_code == 0, result.output
    (run_dir,) = {p.parent for p in results.rglob("best.pt")}
    last = torch.load(run_dir / "last.pt", weights_only=True)
    best = torch.load(run_dir / "best.pt", weights_only=True)["state_dict"]
    averaged = last["average"]["weights"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    steps = sum(config["data_counts"]["train"]) // 16
    assert last["average"]["updates"] == 2 * steps  # one update a step
    if json.loads((run_dir / "metrics.json").read_text())["best_epoch"] == 2:
        assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert any(not torch.equal(last["state_dict"][k], averaged[k]) for k in averaged)


def test_distillation_caches_the_teacher_and_checks_it(tmp_path, monkeypatch):
    results = tmp_path / "r"
    assert run(experiment(tmp_path, "teacher", SMALL), results).exit_code == 0
    (teacher_dir,) = {p.parent for p in results.rglob("best.pt")}
    earlier = set(Path(distill.cache_dir()).glob("teacher-*.npy"))  # other tests' teachers
    student = experiment(
        tmp_path,
        "student",
        {"name": "cnn5", "input_size": 16},
        epochs=1,
        distill={"teacher": str(teacher_dir), "alpha": 0.7, "temperature": 2.0},
    )
    first = run(student, results)
    assert first.exit_code == 0, first.output
    assert "teacher member 1/1" in first.output  # the minutes-long pass says how far it got
    config = yaml.safe_load(next((results / "student").rglob("config.yaml")).read_text())
    assert config["teacher"]["members"][0]["checkpoint"].endswith("best.pt")
    cached = list(set(Path(distill.cache_dir()).glob("teacher-*.npy")) - earlier)
    assert len(cached) == 1
    probs = np.load(cached[0])
    assert probs.shape == (sum(config["data_counts"]["train"]), 7)
    assert np.allclose(probs.sum(1), 1, atol=1e-3)

    def no_teacher_evaluation(*args, **kwargs):
        raise AssertionError("the teacher was evaluated again")

    monkeypatch.setattr("ferbench.infer.predictor.Predictor.predict_arrays", no_teacher_evaluation)
    second = run(student, results, "--set", "train.seed=1")  # another student, same teacher
    assert second.exit_code == 0, second.output
    assert "the teacher's probabilities from the cache" in second.output

    missing = run(student, results, "--set", "train.distill.teacher=no/such/run")
    assert missing.exit_code == 1
    assert "train.distill.teacher: 'no/such/run'" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


def test_a_teacher_with_other_classes_is_refused(tmp_path):
    results = tmp_path / "r"
    six = experiment(tmp_path, "six", SMALL)
    spec = yaml.safe_load(six.read_text())
    spec["data"]["classes"] = ["angry", "fear", "happy", "sad", "surprise", "neutral"]
    six.write_text(yaml.safe_dump(spec))
    assert run(six, results).exit_code == 0
    (teacher_dir,) = {p.parent for p in results.rglob("best.pt")}
    student = experiment(tmp_path, "seven", SMALL, epochs=1, distill=str(teacher_dir))
    result = run(student, results)
    assert result.exit_code == 1
    error = json.loads(next((results / "seven").rglob("status.json")).read_text())["error"]
    assert "train.distill.teacher" in error and "the data has angry, disgust" in error


def test_speedrun_budget_scales_with_the_bound():
    assert speedrun_budget(509) == pytest.approx(300)
    assert speedrun_budget(120) == pytest.approx(1272.5)


def test_bad_distill_settings_name_the_key(tmp_path):
    file = experiment(tmp_path, "bad", SMALL, distill={"teacher": "x", "alpha": 2})
    result = run(file, tmp_path / "r")
    assert (
        result.exit_code == 1 and "train.distill.alpha: 2.0 is not between 0 and 1" in result.output
    )


def test_vote_targets_are_the_label_loss_for_one_hot_votes_and_differ_otherwise():
    import torch.nn.functional as F

    logits = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 7, 5])
    one_hot = F.one_hot(labels, 8).float()
    hard = F.cross_entropy(logits, labels)
    assert torch.allclose(distill.soft_cross_entropy(logits, one_hot), hard)
    split = 0.7 * one_hot + 0.3 * F.one_hot((labels + 1) % 8, 8).float()  # 7 votes to 3
    assert not torch.allclose(distill.soft_cross_entropy(logits, split), hard)


def test_training_on_fer_plus_votes(tmp_path):
    """`train.targets: votes` trains on each face's vote distribution (FER+), and says in one
    line, naming the key, when the data has no votes."""
    from test_data import write_fer_csv

    csv = write_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=(40, 12, 12), bad_rows=False)
    rng = np.random.default_rng(0)
    header = ("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
              "unknown,NF")  # fmt: skip
    rows = []
    for i, usage in enumerate(["Training"] * 40 + ["PublicTest"] * 12 + ["PrivateTest"] * 12):
        votes = rng.multinomial(10, [0.3, 0.3, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02])
        rows.append(f"{usage},fer{i:07d}.png,{','.join(map(str, votes))},0,0")
    (tmp_path / "fer2013new.csv").write_text("\n".join([header, *rows]) + "\n")
    data = {"kind": "ferplus", "path": str(csv), "labels": str(tmp_path / "fer2013new.csv"),
            "size": 16}  # fmt: skip
    from ferbench.data import load_dataset

    faces = load_dataset(data)
    expected = np.array([list(map(int, r.split(",")[2:10])) for r in rows])
    assert np.array_equal(faces.extras["votes"], expected[: len(faces)])  # every row kept
    assert np.array_equal(faces.labels, expected.argmax(1)[: len(faces)])
    spec = yaml.safe_load(experiment(tmp_path, "votes", SMALL, targets="votes").read_text())
    spec["data"] = data
    (tmp_path / "votes.yaml").write_text(yaml.safe_dump(spec))
    result = run(tmp_path / "votes.yaml", tmp_path / "r")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(next((tmp_path / "r").rglob("config.yaml")).read_text())
    assert config["train"]["targets"] == "votes"

    no_votes = run(experiment(tmp_path, "synthetic", SMALL, targets="votes"), tmp_path / "r")
    assert no_votes.exit_code == 1
    assert "train.targets: votes needs annotator votes" in no_votes.output


def test_mixup_and_cutmix_mix_faces_and_say_by_how_much():
    from ferbench.data.augment import mix_batch

    x = torch.rand(16, 1, 12, 12)
    blended, mix = mix_batch(x, mixup=0.4, cutmix=0.0, rng=np.random.default_rng(0))
    assert sorted(mix.partner.tolist()) == list(range(16)) and 0 < mix.share < 1
    assert torch.allclose(blended, mix.share * x + (1 - mix.share) * x[mix.partner])
    boxed, mix = mix_batch(x, mixup=0.0, cutmix=1.0, rng=np.random.default_rng(1))
    moved = mix.partner != torch.arange(16)  # a face paired with itself stays as it was
    pasted = (boxed != x)[moved].float().mean().item()  # the partner's pixels
    assert pasted > 0 and 1 - mix.share == pytest.approx(pasted, abs=0.01)
    votes = torch.softmax(torch.randn(16, 7), 1)
    assert torch.allclose(mix.targets(votes).sum(1), torch.ones(16))
    both = {mix_batch(x, 0.4, 1.0, np.random.default_rng(s))[1].share for s in range(20)}
    assert len(both) > 10  # a share per batch, drawn anew (cutmix's in whole pixels)


def test_training_with_mixup_and_cutmix_resumes_exactly(tmp_path):
    """Mixing is seeded per epoch like the rest of the augmentation, so a trial stopped after
    an epoch ends with the same weights as one that ran straight; a negative alpha is a
    one-line error naming the key."""
    from ferbench.train import experiment as experiments
    from ferbench.train.fit import Reporter
    from ferbench.train.runner import execute_trial

    class StopAfterFirstEpoch(Reporter):
        def epoch_done(self, epoch, epochs, row):
            if epoch == 1:
                raise KeyboardInterrupt

    augment = {"mixup": 0.4, "cutmix": 1.0, "flip": True, "crop_padding": 2}
    trial = experiments.load(experiment(tmp_path, "mix", SMALL, epochs=3, augment=augment))[0]
    with pytest.raises(KeyboardInterrupt):
        execute_trial(trial, tmp_path / "a", reporter=StopAfterFirstEpoch())
    assert execute_trial(trial, tmp_path / "a").status == "done"
    assert execute_trial(trial, tmp_path / "b").status == "done"
    a, b = (torch.load(tmp_path / r / "mix" / trial.name / "last.pt", weights_only=True)
            for r in "ab")  # fmt: skip
    assert all(torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6)
               for k in a["state_dict"])  # fmt: skip
    bad = experiment(tmp_path, "bad", SMALL, augment={"mixup": -1})
    result = run(bad, tmp_path / "r")
    assert result.exit_code == 1 and "bad.yaml: train.augment.mixup: -1" in result.output


def test_an_online_teacher_sees_the_students_batch_as_its_own_input(tmp_path):
    results = tmp_path / "r"
    assert run(experiment(tmp_path, "teacher", SMALL, amp="off"), results).exit_code == 0
    (checkpoint,) = results.rglob("best.pt")
    faces = torch.randint(0, 256, (5, 16, 16), dtype=torch.uint8)
    runtime = resolve_runtime("cpu", "off", "on")
    student = Preprocess(16, 3, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4), channels_last=True)
    x = student(faces)
    assert torch.allclose(student.unnormalize(x), faces.unsqueeze(1) / 255.0, atol=1e-6)
    # one checkpoint listed twice (greedy ensembles repeat members) runs once, weights summed
    teacher = distill.Teacher("t", ((checkpoint, 0.25, 1.0), (checkpoint, 0.5, 1.0)))
    alone = Predictor(checkpoint, amp="off")
    online = distill.OnlineTeacher(teacher, alone.class_names, runtime, student)
    assert len(online.members) == 1 and online.members[0][2] == pytest.approx(1.0)
    expected = alone.predict_arrays(faces.numpy(), tta=False)
    probs = online(x)
    assert not probs.is_inference() and probs.dtype == torch.float32
    assert np.allclose(probs.numpy(), expected, atol=1e-5)
    # a calibrated ensemble's member: its logits divided by its temperature, as the ensemble
    # tempered its probabilities (on one view the same thing)
    sharp = distill.Teacher("t", ((checkpoint, 1.0, 0.5),))
    sharpened = distill.OnlineTeacher(sharp, alone.class_names, runtime, student)(x).numpy()
    assert np.allclose(sharpened, tempered(expected, 0.5), atol=1e-5)
    assert sharpened.max(1).mean() > expected.max(1).mean()


def test_a_student_can_train_on_what_the_teacher_says_of_each_augmented_batch(tmp_path):
    results = tmp_path / "r"
    assert run(experiment(tmp_path, "teacher", SMALL), results).exit_code == 0
    (teacher_dir,) = {p.parent for p in results.rglob("best.pt")}
    before = set(Path(distill.cache_dir()).glob("teacher-*.npy"))
    student = experiment(
        tmp_path,
        "student",
        {"name": "cnn5", "input_size": 20},  # another size: the teacher's view is resized
        epochs=1,
        augment={"crop_padding": 2, "flip": True, "mixup": 0.2},
        distill={"teacher": str(teacher_dir), "views": "student"},
    )
    spec = yaml.safe_load(student.read_text())
    spec["data"]["size"] = 20
    student.write_text(yaml.safe_dump(spec))
    result = run(student, results)
    assert result.exit_code == 0, result.output
    assert "the teacher (1 models) sees every training batch" in result.output
    assert set(Path(distill.cache_dir()).glob("teacher-*.npy")) == before  # nothing cached
    config = yaml.safe_load(next((results / "student").rglob("config.yaml")).read_text())
    assert config["train"]["distill"]["views"] == "student"
    assert config["teacher"]["members"][0]["checkpoint"].endswith("best.pt")
    bad = run(student, results, "--set", "train.distill.views=mirror")
    assert bad.exit_code == 1 and "train.distill.views" in bad.output
