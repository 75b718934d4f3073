"""Every zoo model can be a distilled student (one epoch) and an ensemble member whose artifact loads
back. Parametrized over the registry, so new models are covered."""

from __future__ import annotations

import pytest
import torch

from frugalml import artifact
from frugalml.compress.distill import DistillStage, distill_with_metrics
from frugalml.compress.ensemble import FORMAT, ensemble
from frugalml.models import list_models


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_is_a_student_and_an_ensemble_member(name, data, zoo, teacher, tmp_path):
    student, m = distill_with_metrics(zoo(name), teacher, DistillStage(epochs=1, train={"batch_size": 64}), data,
                                      progress=False)
    assert m["training"]["epochs_run"] == 1 and m["student_params"] > 0
    ens = ensemble([student.eval(), teacher])
    artifact.save_any(ens, tmp_path / "e", {}, {"format": FORMAT})
    x = data.sample_input(3)
    with torch.no_grad():
        assert torch.allclose(artifact.load(tmp_path / "e")(x), ens(x), atol=1e-6)
