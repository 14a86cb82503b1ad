"""A minimal rate-only fit of a :class:`SelectiveEntropyModel` (tests, benchmarks, smoke runs).

The real trainer (rate + task distortion, TOFC eq. 20) lives elsewhere. Because y is quantised as
round(y - mu) + mu with a fixed step, the reconstruction error is at most y_step / 2 whatever the entropy model,
so fitting the rate alone already gives meaningful bits for a bytes-vs-entropy check.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .selective import SelectiveEntropyModel

__all__ = ["fit_rate"]


def fit_rate(
    model: SelectiveEntropyModel,
    features: Tensor,
    steps: int = 300,
    batch: int = 256,
    lr: float = 3e-3,
    temperature: float = 1.0,
    balance_weight: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """Adam on mean bits per feature + balance loss; separate Adam for the z-density quantiles (aux loss).

    Args:
        model: the model to fit (left in eval mode, *not* updated: call ``model.update()`` afterwards).
        features: Tensor[M, D] training features.
        steps, batch, lr, temperature, balance_weight, seed: optimisation settings.
        progress: show a tqdm bar.

    Returns:
        The final mean bits per merged feature (training estimate).
    """
    gen = torch.Generator().manual_seed(seed)
    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    aux_ids = {id(p) for p in aux_params}
    main_params = [p for p in model.parameters() if id(p) not in aux_ids]
    assert not aux_ids & {id(p) for p in main_params}, "main and aux parameter sets overlap"
    opt = torch.optim.Adam(main_params, lr=lr)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-2)
    model.train()
    rng = range(steps)
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc="fit", leave=False)
    bits = float("nan")
    for _ in rng:
        idx = torch.randint(0, features.shape[0], (min(batch, features.shape[0]),), generator=gen)
        out = model(features[idx], temperature=temperature)
        loss = out["bits"].mean() + balance_weight * out["balance_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux_opt.zero_grad()
        model.aux_loss().backward()
        aux_opt.step()
        bits = float(out["bits"].detach().mean())
    model.eval()
    return bits
