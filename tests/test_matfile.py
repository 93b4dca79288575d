import numpy as np
import pytest

from cfrh.errors import DataError
from cfrh_cache.matfile import MatFile
from cfrh_cache.readers.synth import write_mat5, write_mat73


@pytest.mark.parametrize("writer,fmt", [(write_mat5, "v5"), (write_mat73, "v7.3")])
def test_both_layouts_read_in_matlab_order(tmp_path, writer, fmt):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (37, 11)).astype(np.uint8)
    images = rng.integers(0, 255, (8, 6, 3, 37)).astype(np.uint8)  # H×W×3×N as MATLAB keeps them
    writer(tmp_path / "a.mat", {"YAll": y, "IAll": images})
    with MatFile(tmp_path / "a.mat") as mat:
        assert mat.format == fmt
        var = mat.var("YAll")
        assert var.shape == (37, 11)
        np.testing.assert_array_equal(var.read(), y)
        np.testing.assert_array_equal(var.take(0, 5, 9), y[5:9])
        iv = mat.var("IAll")
        assert iv.shape == (8, 6, 3, 37)
        np.testing.assert_array_equal(iv.take(3, 30, 37), images[..., 30:37])


def test_v73_is_hdf5_with_dims_reversed(tmp_path):
    import h5py
    write_mat73(tmp_path / "b.mat", {"YAll": np.zeros((5, 3))})
    with h5py.File(tmp_path / "b.mat") as f:
        assert f["YAll"].shape == (3, 5)  # what h5py users see: the reason for the transpose


@pytest.mark.parametrize("writer", [write_mat5, write_mat73])
def test_struct_fields(tmp_path, writer):
    variables = {"param": {"indexQuery": np.arange(1, 6)}} if writer is write_mat5 else {"param/indexQuery": np.arange(1, 6)}
    writer(tmp_path / "c.mat", variables)
    with MatFile(tmp_path / "c.mat") as mat:
        np.testing.assert_array_equal(mat.var("param/indexQuery").read().ravel(), np.arange(1, 6))


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"hello, not matlab" * 20)
    with pytest.raises(DataError, match=r"x\.mat.*not a MATLAB"):
        MatFile(tmp_path / "x.mat")


def test_missing_file_and_key(tmp_path):
    with pytest.raises(DataError, match="nope.mat: file not found"):
        MatFile(tmp_path / "nope.mat")
    write_mat5(tmp_path / "d.mat", {"Other": np.ones((2, 2))})
    with MatFile(tmp_path / "d.mat") as mat, pytest.raises(DataError, match=r"d\.mat: no variable 'YAll'.*has: Other"):
        mat.var("YAll")


def test_shape_error_names_file_key_found_expected_and_transposition(tmp_path):
    write_mat5(tmp_path / "e.mat", {"YAll": np.ones((1386, 30))})
    with MatFile(tmp_path / "e.mat") as mat:
        with pytest.raises(DataError) as err:
            mat.var("YAll").expect_shape((30, 1386))
    message = str(err.value)
    assert "e.mat" in message and "'YAll'" in message and "1386×30" in message and "30×1386" in message
    assert "transposed" in message
