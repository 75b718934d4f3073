"""Bad data files: a run on them exits 2 naming the file and what is wrong, before any run folder is
made; `measure`/`export`/`sensitivity` on data that does not fit the model name both shapes."""

from __future__ import annotations

import gzip

import pytest

from tests.conftest import tiny_recipe
from tests.data._datafiles import make_idx_dir, make_image_folder, write_idx
from tests.reliability.conftest import assert_clean_error, save_tiny_artifact, snapshot, write_recipe


def _idx(tmp):
    return make_idx_dir(tmp / "idx")


def _idx_missing_file(tmp):
    d = _idx(tmp)
    (d / "t10k-labels-idx1-ubyte").unlink()
    return d, ["t10k-labels-idx1-ubyte", "not found"]


def _idx_bad_magic(tmp):
    d = _idx(tmp)
    import numpy as np

    write_idx(d / "train-images-idx3-ubyte", np.zeros((60, 6, 6)), magic=0x0999)
    return d, ["train-images-idx3-ubyte", "magic"]


def _idx_truncated(tmp):
    d = _idx(tmp)
    p = d / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:100])
    return d, ["train-images-idx3-ubyte", "bytes"]


def _idx_header_only(tmp):
    d = _idx(tmp)
    (d / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    return d, ["train-labels-idx1-ubyte", "truncated"]


def _idx_count_mismatch(tmp):
    d = _idx(tmp)
    import numpy as np

    write_idx(d / "train-labels-idx1-ubyte", np.zeros(59))
    return d, ["60 images", "59 labels"]


def _idx_bad_gzip(tmp):
    d = _idx(tmp)
    p = d / "train-images-idx3-ubyte"
    p.rename(d / "train-images-idx3-ubyte.gz")
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all" * 4)
    return d, ["train-images-idx3-ubyte.gz", "gzip"]


def _idx_empty_file(tmp):
    d = _idx(tmp)
    (d / "t10k-images-idx3-ubyte").write_bytes(b"")
    return d, ["t10k-images-idx3-ubyte", "truncated"]


def _idx_gz_truncated(tmp):
    d = _idx(tmp)
    p = d / "train-labels-idx1-ubyte"
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(p.read_bytes())[:-12])
    p.unlink()
    return d, ["train-labels-idx1-ubyte.gz"]


def _idx_not_dir(tmp):
    return tmp / "nowhere", ["nowhere", "not found"]


IDX_CASES = {f.__name__[1:]: f for f in (_idx_missing_file, _idx_bad_magic, _idx_truncated, _idx_header_only,
                                         _idx_count_mismatch, _idx_bad_gzip, _idx_empty_file, _idx_gz_truncated,
                                         _idx_not_dir)}


def _folder_missing(tmp):
    return tmp / "nope", ["nope", "not found"]


def _folder_empty(tmp):
    (tmp / "imgs").mkdir()
    return tmp / "imgs", ["imgs", "no class folders"]


def _folder_empty_class(tmp):
    d = make_image_folder(tmp / "imgs")
    (d / "fox").mkdir()
    return d, ["fox", "empty class folder"]


def _folder_bad_image(tmp):
    d = make_image_folder(tmp / "imgs")
    (d / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return d, ["broken.png", "unreadable image"]


def _folder_text_as_jpg(tmp):
    d = make_image_folder(tmp / "imgs")
    (d / "dog" / "notes.jpg").write_text("hello")
    return d, ["notes.jpg", "unreadable image"]


def _folder_split_mismatch(tmp):
    make_image_folder(tmp / "imgs" / "train")
    make_image_folder(tmp / "imgs" / "test", classes=("cat", "dog"))
    return tmp / "imgs", ["differ"]


def _folder_is_file(tmp):
    (tmp / "afile").write_text("x")
    return tmp / "afile", ["afile"]


FOLDER_CASES = {f.__name__[1:]: f for f in (_folder_missing, _folder_empty, _folder_empty_class, _folder_bad_image,
                                            _folder_text_as_jpg, _folder_split_mismatch, _folder_is_file)}


def check_run_fails_cleanly(tmp_path, cli, spec: str, needles: list[str], **data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(data={"name": spec, **data}))
    before = snapshot(tmp_path)
    res = cli("run", recipe, "--out", tmp_path / "run")
    assert_clean_error(res, *needles)
    assert snapshot(tmp_path) == before  # no half-created run folder


@pytest.mark.parametrize("case", sorted(IDX_CASES))
def test_bad_idx(case, tmp_path, cli):
    d, needles = IDX_CASES[case](tmp_path)
    check_run_fails_cleanly(tmp_path, cli, f"idx:{d}", needles)


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_bad_image_folder(case, tmp_path, cli):
    d, needles = FOLDER_CASES[case](tmp_path)
    check_run_fails_cleanly(tmp_path, cli, f"folder:{d}", needles, image_size=8)


def test_fashion_mnist_root_missing(tmp_path, cli):
    check_run_fails_cleanly(tmp_path, cli, "fashion-mnist", ["no-such-dir"], root=str(tmp_path / "no-such-dir"))


def test_empty_test_split_is_an_error_not_a_null_accuracy(tmp_path, cli):
    d = make_image_folder(tmp_path / "imgs", classes=("cat", "dog"), per_class=1)  # 2 images: no test split
    check_run_fails_cleanly(tmp_path, cli, f"folder:{d}", ["empty test split"], image_size=8)


@pytest.mark.parametrize("command", ["measure", "export", "sensitivity"])
def test_data_that_does_not_fit_the_model_names_both_shapes(command, tmp_path, cli):
    art = save_tiny_artifact(tmp_path / "art")  # built for (1, 8, 8), 4 classes
    before = snapshot(tmp_path)
    extra = ["--format", "onnx"] if command == "export" else []
    res = cli(command, art, "--data", "digits", *extra)  # digits: 10 classes
    assert_clean_error(res, "[1, 8, 8] with 4 classes", "'digits' gives", "10 classes")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("spec", ["nope", "digits:/x", "idx:"])
def test_bad_data_spec_on_the_command_line(spec, tmp_path, cli):
    art = save_tiny_artifact(tmp_path / "art")
    assert_clean_error(cli("measure", art, "--data", spec), "--data")
