"""Your own data and a learner you can use: data=folder, metarun predict, metarun.load / metarun.run.

The folders are real Omniglot drawings (105x105 PNGs, black ink on white) laid out as a user would
lay out their own images, one folder per class, grouped by alphabet."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metarun
from metarun.data.image_folder import scan_folder, seeded_fraction_split
from metarun.errors import DataError, MetarunError
from tests.conftest import DATA_DIR, HANG_GUARD_S, metarun_command, needs_omniglot_files

pytestmark = needs_omniglot_files
FOLDER = ("data=folder", "data.image_size=28", "data.invert=true")


def extract_characters(zip_name: str, dest: Path, characters: int, images: int = 20,
                       skip: int = 0) -> list[str]:
    """``characters`` Omniglot characters of ``zip_name`` (after the first ``skip``) as
    dest/<alphabet>/<character>/<file>.png; returns the class names (alphabet/character)."""
    with zipfile.ZipFile(Path(DATA_DIR) / "omniglot" / zip_name) as archive:
        by_class: dict[str, list[str]] = {}
        for name in archive.namelist():
            parts = name.split("/")
            if name.endswith(".png") and len(parts) == 4:
                by_class.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
        chosen = sorted(by_class)[skip:skip + characters]
        for name in chosen:
            for member in sorted(by_class[name])[:images]:
                target = dest / name / Path(member).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    return chosen


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """A meta-training tree of 60 background characters; a support folder (5 evaluation
    characters, 5 drawings each) and a labelled query folder (the same characters, 10 others)."""
    root = tmp_path_factory.mktemp("own_data")
    extract_characters("images_background.zip", root / "train_tree", 60)
    held_out = root / "held_out"
    names = extract_characters("images_evaluation.zip", held_out, 5, images=15, skip=100)
    for name in names:
        files = sorted((held_out / name).iterdir())
        for i, f in enumerate(files):
            target = root / ("support" if i < 5 else "query") / name.replace("/", "_") / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            f.rename(target)
    return {"train": root / "train_tree", "support": root / "support", "query": root / "query"}


@pytest.fixture(scope="module")
def trained_run(trees, tmp_path_factory, cache_dir) -> Path:
    """ProtoNet meta-trained on the folder from the CLI, 200 episodes of 10-way 1-shot."""
    run_dir = tmp_path_factory.mktemp("folder_run")
    command, env = metarun_command(cache_dir, "algo=protonet", *FOLDER, f"data.root={trees['train']}",
                                   "algo.episode.ways=10", "trainer.max_steps=200", "trainer.val_every=100",
                                   "trainer.val_episodes=20", "eval.episodes=100", f"hydra.run.dir={run_dir}")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert done.returncode == 0, done.stderr
    return run_dir


def predict_cli(cache_dir, *args: str) -> subprocess.CompletedProcess:
    _, env = metarun_command(cache_dir)
    return subprocess.run([sys.executable, "-m", "metarun.cli", "predict", *args], capture_output=True,
                          text=True, env=env, timeout=HANG_GUARD_S)


def test_a_folder_meta_trains_with_a_seeded_split_stored_with_the_run(trained_run):
    results = json.loads((trained_run / "results.json").read_text())
    assert results["data"] == "folder" and results["mean"] > 0.6  # 5-way 1-shot on unseen classes: chance 0.2
    split = json.loads((trained_run / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (42, 6, 12)
    assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
    assert all(name.count("/") == 1 for name in split["train"])  # alphabet/character: nested classes
    stored = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)["learner"]
    assert stored["class_split"] == split
    assert stored["preprocessing"] == {"image_size": 28, "channels": 1, "invert": True,
                                       "mean": pytest.approx(stored["preprocessing"]["mean"]),
                                       "std": pytest.approx(stored["preprocessing"]["std"])}
    assert len(stored["preprocessing"]["mean"]) == 1  # grey images: one channel (data.channels=auto)


def test_predict_from_the_cli_and_the_python_api_agree_and_classify_new_classes(trained_run, trees, cache_dir,
                                                                                tmp_path):
    out = tmp_path / "predictions.csv"
    done = predict_cli(cache_dir, str(trained_run), "--support", str(trees["support"]), "--query",
                       str(trees["query"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "50 queries, 5 classes (25 support images)" in done.stdout and "accuracy" in done.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 50
    accuracy = np.mean([row["predicted"] == row["label"] for row in rows])
    assert accuracy > 0.8  # 5 new characters, 5 drawings each: chance 0.2

    learner = metarun.load(trained_run / "checkpoints" / "last.pt")
    support = sorted(trees["support"].glob("*/*.png"))
    learner.adapt(support, [p.parent.name for p in support])
    queries = [trees["query"] / row["file"] for row in rows]
    probabilities = learner.predict(queries)
    assert learner.classes == sorted({p.parent.name for p in support})
    for row, p in zip(rows, probabilities.tolist()):
        assert row["predicted"] == learner.classes[int(np.argmax(p))]
        assert [float(row[f"p({c})"]) for c in learner.classes] == pytest.approx(p, abs=1e-6)
    assert torch.allclose(probabilities.sum(1), torch.ones(len(rows)))


def test_the_api_reads_arrays_pil_images_and_tensors_as_it_reads_files(trained_run, trees):
    learner = metarun.load(trained_run)  # a run dir: the checkpoint that its results.json tested
    support = sorted(trees["support"].glob("*/*.png"))
    learner.adapt([Image.open(p) for p in support], [p.parent.name for p in support])
    queries = sorted(trees["query"].glob("*/*.png"))[:7]
    from_files = learner.predict(queries)
    as_arrays = [np.array(Image.open(p).convert("L")) for p in queries]
    assert torch.equal(learner.predict(as_arrays), from_files)
    assert torch.equal(learner.predict([torch.from_numpy(a).unsqueeze(0) for a in as_arrays]), from_files)
    assert torch.equal(learner.predict([a.astype(np.float32) / 255 for a in as_arrays]), from_files)
    with pytest.raises(DataError, match="values outside"):
        learner.predict([as_arrays[0].astype(np.float32)])


def test_mode_eval_and_a_resume_reuse_the_split_the_checkpoint_was_trained_with(trained_run, trees, cli,
                                                                               tmp_path):
    short_run = tmp_path / "short"
    cli("algo=protonet", *FOLDER, f"data.root={trees['train']}", "algo.episode.ways=5", "trainer.max_steps=4",
        "trainer.val_every=0", "eval.episodes=10", f"hydra.run.dir={short_run}")
    trained_split = json.loads((trained_run / "split.json").read_text())
    assert json.loads((short_run / "split.json").read_text()) == trained_split
    added = extract_characters("images_background.zip", trees["train"], 3, skip=60)  # the folder grows
    try:
        scan = scan_folder(trees["train"])
        fractions = type("Fractions", (), {"val": 0.1, "test": 0.2})
        assert seeded_fraction_split(list(scan.classes), fractions, 0) != trained_split  # a new split now
        cli("mode=eval", "algo=protonet", *FOLDER, f"data.root={trees['train']}", "eval.episodes=10",
            f"trainer.ckpt_path={trained_run / 'checkpoints' / 'last.pt'}", f"hydra.run.dir={tmp_path / 'eval'}")
        assert json.loads((tmp_path / "eval" / "split.json").read_text()) == trained_split
        cli("algo=protonet", *FOLDER, f"data.root={trees['train']}", "algo.episode.ways=5", "trainer.max_steps=8",
            "trainer.val_every=0", "eval.episodes=10", f"hydra.run.dir={short_run}", "trainer.resume=true")
        assert json.loads((short_run / "results.json").read_text())["step"] == 8
        assert json.loads((short_run / "split.json").read_text()) == trained_split
    finally:
        for name in added:
            shutil.rmtree(trees["train"] / name)
            alphabet = (trees["train"] / name).parent
            if not any(alphabet.iterdir()):
                alphabet.rmdir()


def test_metarun_run_returns_what_the_cli_writes(trees, tmp_path):
    results = metarun.run(["algo=protonet", *FOLDER, f"data.root={trees['train']}", "algo.episode.ways=5",
                           "trainer.max_steps=5", "trainer.val_every=0", "eval.episodes=10",
                           "trainer.progress=false"], run_dir=tmp_path / "api_run")
    assert results == json.loads((tmp_path / "api_run" / "results.json").read_text())
    assert results["step"] == 5 and results["n_episodes"] == 10


# -- bad input: one line naming the file or class and what is needed; nothing dropped or padded ------

def small_tree(root: Path, classes: int = 6, images: int = 4) -> Path:
    """Class folders of distinct grey images generated with numpy (shape c drawn in class c)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(images):
            pixels = (rng.random((20, 20)) * 60).astype(np.uint8)
            pixels[2 + c:8 + c, 2:18] = 255
            (root / f"class{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_bad_folders_are_refused_with_the_file_or_class_named(cli, tmp_path):
    """Each fault is named in one line; the command's form of it is checked once (exit status 2,
    the last line of stderr), the other faults in process, where the same message is raised."""
    settings = ("algo=protonet", "data=folder", "data.image_size=20", "data.ways=2", "data.shots=1",
                "data.queries=2", "algo.episode.ways=2", "algo.episode.queries=2", "trainer.max_steps=2",
                "backbone.blocks=2", "eval.episodes=4", "trainer.val_every=0", "data.fractions.val=0",
                "data.fractions.test=0.34", "trainer.progress=false")

    def error(root: Path, *overrides: str) -> str:
        with pytest.raises(MetarunError) as refused:
            metarun.run([*settings, f"data.root={root}", *overrides], run_dir=tmp_path / "run")
        return str(refused.value)

    root = small_tree(tmp_path / "small")
    done = cli(*settings, f"data.root={root}", "data.queries=5", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # after the decoding's progress bar
    assert last.startswith("metarun: error: "), done.stderr
    assert "class class0 of the test split has 4 images (2 class(es) have fewer than 6" in last
    (root / "class0" / "broken.png").write_bytes(b"not a png at all")
    message = error(root)
    assert "broken.png is not a readable image" in message and "do not decode" in message
    (root / "class0" / "broken.png").unlink()
    (root / "empty").mkdir()
    assert f"{root / 'empty'} holds no images" in error(root)
    (root / "empty").rmdir()
    Image.new("L", (5, 5)).save(root / "loose.png")
    assert "holds images directly" in error(root)
    (root / "loose.png").unlink()
    (root / "train.txt").write_text("class0\nclass1\nclass2\nclass3\n")
    (root / "test.txt").write_text("class4\nclass3\n")
    assert "test.txt:2: class class3 is in train.txt too" in error(root)
    (root / "test.txt").write_text("class4\nclass5\nclass9\n")
    assert f"test.txt:3: no class folder {root / 'class9'}" in error(root)
    assert "data.root=None is not allowed" in error(root, "data.root=null")
    assert "data.channels=2 is not allowed" in error(root, "data.channels=2")


def test_class_lists_set_the_split_and_mixed_image_sizes_and_colours_are_resized(cli, tmp_path):
    root = small_tree(tmp_path / "lists", classes=6)
    Image.new("RGB", (47, 31), (200, 10, 10)).save(root / "class5" / "colour.jpg")  # another size, in colour
    (root / "train.txt").write_text("# classes to meta-train on\nclass0\nclass1\nclass2\n")
    (root / "test.txt").write_text("class3/\nclass4\nclass5\n")
    run_dir = tmp_path / "run"
    cli("algo=protonet", "data=folder", f"data.root={root}", "data.image_size=20", "data.ways=2", "data.queries=2",
        "algo.episode.ways=2", "algo.episode.queries=2", "trainer.max_steps=2", "backbone.blocks=2",
        "eval.episodes=4", "trainer.val_every=0", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "split.json").read_text()) == {
        "train": ["class0", "class1", "class2"], "test": ["class3", "class4", "class5"]}
    stored = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["learner"]
    assert stored["input_shape"] == [3, 20, 20]  # one colour image: every image read as RGB


def test_predict_refuses_a_support_set_the_learner_cannot_read(cli, tmp_path, cache_dir):
    root = small_tree(tmp_path / "tree", classes=8, images=3)
    run_dir = tmp_path / "maml"
    cli("algo=maml", "data=folder", f"data.root={root}", "data.image_size=20", "data.ways=2", "data.queries=1",
        "algo.episode.queries=1", "algo.meta_batch=2", "trainer.max_steps=1", "backbone.blocks=2", "eval.episodes=2",
        "trainer.val_every=0", "data.fractions.val=0", "data.fractions.test=0.25", f"hydra.run.dir={run_dir}")
    learner = metarun.load(run_dir)
    images = sorted(root.glob("*/*.png"))
    with pytest.raises(DataError, match="the support set has 3 classes; algo=maml .* data.ways=2"):
        learner.adapt(images[:9], [p.parent.name for p in images[:9]])
    with pytest.raises(DataError, match="2 support images but 1 labels"):
        learner.adapt(images[:2], ["a"])
    done = predict_cli(cache_dir, str(run_dir), "--support", str(root), "--query", str(root / "class0"),
                       "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 2 and "the support set has 8 classes" in done.stderr
    learner.adapt(images[:6], [p.parent.name for p in images[:6]])  # 2 classes: what MAML was trained for
    assert learner.predict(images[6:9]).shape == (3, 2)


def test_data_check_reports_small_classes_unreadable_files_and_images_shared_by_two_splits(tmp_path):
    root = small_tree(tmp_path / "check", classes=6, images=4)
    (root / "class1" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    command = [sys.executable, "-m", "metarun.data_check", "check", "folder", f"data.root={root}",
               "algo=protonet", "algo.episode.queries=2", "data.image_size=20", "data.queries=5", "data.fractions.val=0", "data.fractions.test=0.5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode == 1
    assert "bad.jpg is not a readable image" in done.stdout
    assert "class" in done.stdout.split("classes too small")[1]
    (root / "class1" / "bad.jpg").unlink()
    split = seeded_fraction_split([f"class{c}" for c in range(6)],
                                  type("Fractions", (), {"val": 0.0, "test": 0.5}), 0)
    shutil.copy(root / split["train"][0] / "0.png", root / split["test"][0] / "copy.png")
    done = subprocess.run(command[:-3] + ["data.fractions.val=0", "data.fractions.test=0.5"],
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    pair = {f"{split['train'][0]}/0.png (train)", f"{split['test'][0]}/copy.png (test)"}
    assert any(set(line.strip().split(" = ")) == pair for line in done.stdout.splitlines())
    assert done.returncode == 1


IMAGE_LEARNERS = ("anil", "baseline", "baselinepp", "boil", "feat", "fomaml", "imaml", "maml", "mamlpp", "mann", "matchingnet",
                  "metabaseline", "metalstm", "metanas", "metaoptnet", "metasgd", "protomaml", "protonet", "r2d2",
                  "relationnet", "reptile", "snail")
# MetaNAS's default search network and 50 test steps would take most of a minute here
SMALLER = {"metanas": ("algo.search_space.channels=4", "algo.search_space.layers=2",
                       "algo.search_space.reduction_layers=[1]", "algo.eval_inner_steps=2")}


@pytest.mark.parametrize("algo", IMAGE_LEARNERS)
def test_every_image_learner_trains_on_a_folder_and_predicts(algo, tmp_path):
    """One update on a small folder, then metarun.load / adapt / predict: each learner's own way
    of adapting at test time runs on a user's support set (that they learn is tested elsewhere)."""
    root = small_tree(tmp_path / "tree", classes=6, images=4)
    metarun.run([f"algo={algo}", "data=folder", f"data.root={root}", "data.image_size=20", "data.ways=2",
                 "data.shots=1", "data.queries=1", "algo.episode.ways=2", "algo.episode.shots=1",
                 "algo.episode.queries=1", "algo.meta_batch=2", "trainer.max_steps=1", "trainer.val_every=0",
                 "eval.episodes=2", "data.fractions.val=0", "data.fractions.test=0.34", "trainer.progress=false",
                 *SMALLER.get(algo, ())], run_dir=tmp_path / "run")
    learner = metarun.load(tmp_path / "run")
    support = [root / "class0" / "0.png", root / "class1" / "0.png"]
    learner.adapt(support, ["zero", "one"])
    probabilities = learner.predict([root / c / f"{i}.png" for c in ("class0", "class1") for i in (1, 2)])
    assert learner.classes == ["one", "zero"] and probabilities.shape == (4, 2)
    assert torch.isfinite(probabilities).all() and torch.allclose(probabilities.sum(1), torch.ones(4))
