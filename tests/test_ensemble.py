"""Ensembles: a list of checkpoints or a zip of them, mean and spread of the members."""

import zipfile

import numpy as np
import torch

import fastnnp


def _inputs(data_dir):
    ref = np.load(data_dir / "tensornet" / "reference.npz")
    return torch.as_tensor(ref["z"]), torch.as_tensor(ref["pos"], dtype=torch.float32), torch.as_tensor(ref["batch"])


def test_list_and_zip_ensembles_average_their_members(data_dir, tmp_path):
    paths = [data_dir / "tensornet" / "model.ckpt", data_dir / "tensornet" / "model_legacy_layout.ckpt"]
    z, pos, batch = _inputs(data_dir)
    members = [fastnnp.load_model(p, layout=layout) for p, layout in zip(paths, ["current", "legacy"], strict=True)]
    outputs = [m(z, pos, batch) for m in members]
    ensemble = fastnnp.load_model([str(paths[0]), str(paths[0])], return_std=True)
    e_mean, f_mean, e_std, f_std = ensemble(z, pos, batch)
    torch.testing.assert_close(e_mean, outputs[0][0])
    torch.testing.assert_close(f_mean, outputs[0][1])
    assert float(e_std.abs().max()) == 0.0 and float(f_std.abs().max()) == 0.0

    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(paths[0], "a.ckpt")
        zf.write(data_dir / "gn" / "model.ckpt", "b.ckpt")
    gn = fastnnp.load_model(data_dir / "gn" / "model.ckpt")
    e_gn, f_gn = gn(z, pos, batch)
    e_mean, f_mean, e_std, _ = fastnnp.load_model(archive, return_std=True)(z, pos, batch)
    torch.testing.assert_close(e_mean, (outputs[0][0] + e_gn) / 2)
    torch.testing.assert_close(f_mean, (outputs[0][1] + f_gn) / 2)
    torch.testing.assert_close(e_std, torch.stack([outputs[0][0], e_gn]).std(0))
