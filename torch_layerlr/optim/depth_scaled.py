r"""SGD whose learning rate follows the data-dependent depth scaling of deep linear networks."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from torch import Tensor

from torch_layerlr.optim._base import check_float
from torch_layerlr.optim.layerwise import LayerwiseSGD

__all__ = ["DepthScaledSGD"]

#: The architectures of the closed forms, ``torch_layerlr.theory.ARCHS`` (a test keeps them equal): kept here so
#: that checking ``arch`` needs no NumPy.
ARCHS = ("chain", "res1", "res2")


def _theory():
    """The closed forms (NumPy/SciPy), imported on first use: the optimizers themselves need only torch."""
    try:
        from torch_layerlr import theory
    except ImportError as exc:
        raise ImportError("DepthScaledSGD's closed forms need NumPy and SciPy: pip install "
                          "'torch_layerlr[theory]', or pass sharpness=... (then only torch is needed)") from exc
    return theory


def _num_tensors(params: list) -> int:
    """How many parameter tensors ``params`` (tensors, or param-group dicts) holds: the default depth."""
    n = 0
    for p in params:
        if isinstance(p, dict):
            group = p["params"]
            n += 1 if isinstance(group, Tensor) else len(list(group))
        else:
            n += 1
    return n


class DepthScaledSGD(LayerwiseSGD):
    r""":class:`LayerwiseSGD` with :math:`\eta = 1/(\tau S)`, :math:`S` the sharpness of the balanced global
    minimum of a depth-L linear network on data with moments :math:`\mu_{xx}`, :math:`\mu_{yx}`
    (:func:`torch_layerlr.theory.max_stable_lr`: eq. 5 chain, eq. 28 res1, eq. 34 res2).

    .. math:: \eta_{\rm chain} = \frac{\tau^{-1}}{\mu_{xx}L}\Big(\frac{\mu_{yx}}{\mu_{xx}}\Big)^{-2+2/L}

    ``tau > 1/2`` is stable (``tau=1`` one-step optimal, large ``tau`` tracks gradient flow, where one step is
    one unit of the paper's time).  ``depth`` defaults to the number of parameter tensors (one per layer, as
    in :mod:`torch_layerlr.models`).  The loss must use the ½ convention, :math:`\frac{1}{2N}\sum(y-f)^2`
    (for ``mse_loss`` without the ½ the curvature doubles: use twice ``tau``).  ``momentum`` and the other
    keywords pass through to :class:`LayerwiseSGD`; the rule is derived for plain GD (heavy-ball momentum
    :math:`\beta` moves the stability edge to :math:`\tau = 1/(2(1+\beta))`).

    ``sharpness`` (keyword) replaces the closed form, e.g. a measured top Hessian eigenvalue; then
    ``mu_xx``/``mu_yx`` may be ``None``.  :meth:`from_data` estimates everything from samples;
    :meth:`from_sharpness` measures :math:`S` of any network's loss (with :class:`~torch_layerlr.optim.SharpnessLR`
    to re-measure it during training).  The closed
    forms and :meth:`from_data` need NumPy and SciPy (the ``theory`` extra); ``sharpness=`` needs only torch.

    The rule's inputs are kept in ``optimizer.depth_scaling`` and the learning rate in the param groups'
    ``lr`` (so LR schedulers act on it as usual).
    """

    def __init__(self, params: Iterable, mu_xx: Optional[float], mu_yx: Optional[float],
                 depth: Optional[int] = None, tau: float = 1.0, arch: str = "chain", momentum: float = 0.0, *,
                 sharpness: Optional[float] = None, **kwargs: Any) -> None:
        if isinstance(params, Tensor):  # torch.optim's error, before the tensor's rows are taken for params
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__module__}.{type(params).__name__}")
        params = list(params)
        if depth is None:
            depth = _num_tensors(params)
            if depth == 0:
                raise ValueError("DepthScaledSGD got an empty parameter list")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        tau = check_float("tau", tau, low=0.0, low_open=True)
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        if sharpness is None:
            if mu_xx is None or mu_yx is None:
                raise ValueError("DepthScaledSGD needs mu_xx and mu_yx (or sharpness=...)")
            lr = float(_theory().max_stable_lr(depth, mu_xx, mu_yx, tau, arch))
        else:
            s = check_float("sharpness", sharpness, low=0.0, low_open=True)
            lr = 1.0 / (tau * s)
        if "lr" in kwargs:
            raise TypeError("DepthScaledSGD computes lr from the data; pass tau to scale it")
        self.depth_scaling = dict(mu_xx=mu_xx, mu_yx=mu_yx, depth=depth, tau=tau, arch=arch, sharpness=sharpness,
                                  lr=lr)
        super().__init__(params, lr=lr, momentum=momentum, **kwargs)

    @classmethod
    def from_data(cls, params: Iterable, x: Any, y: Any, depth: Optional[int] = None, tau: float = 1.0,
                  arch: str = "chain", momentum: float = 0.0, **kwargs: Any) -> "DepthScaledSGD":
        r"""Build from samples ``x`` (N,) / (N, d_in) and ``y`` (N,) / (N, d_out)
        (:func:`torch_layerlr.theory.data_moments`).

        Scalar data use :math:`\mu_{xx}, \mu_{yx}` in the closed form.  Matrix data (``arch="chain"`` only) use
        the exact top Hessian eigenvalue when the data are aligned and otherwise the conservative bound
        :math:`L\lambda_{\max}(\Sigma_{xx})\sigma_{\max}(\Sigma_{yx}\Sigma_{xx}^{-1})^{2-2/L}`
        (:func:`torch_layerlr.theory.data_sharpness`).
        """
        params = list(params)
        if depth is None:
            depth = _num_tensors(params)
        theory = _theory()
        moments = theory.data_moments(x, y)
        if moments.scalar:
            return cls(params, moments.mu_xx, moments.mu_yx, depth, tau, arch, momentum, **kwargs)
        s = float(theory.data_sharpness(depth, moments, arch))
        return cls(params, moments.mu_xx, moments.mu_yx, depth, tau, arch, momentum, sharpness=s, **kwargs)

    @classmethod
    def from_sharpness(cls, params: Iterable, loss_fn: Callable[[], Tensor], tau: float = 1.0, momentum: float = 0.0,
                       *, seed: int = 0, **kwargs: Any) -> "DepthScaledSGD":
        r"""Build with :math:`\eta = 1/(\tau S)`, :math:`S` the top Hessian eigenvalue of ``loss_fn()`` (a closure
        computing the loss on a fixed batch) over ``params``, measured now
        (:func:`~torch_layerlr.optim.sharpness_rate.measure_sharpness`): the rule for any network, which at a
        deep linear network's balanced global minimum is :meth:`from_data`'s closed form. The measurement is kept
        in ``depth_scaling["sharpness"]``. Pass the optimizer to :class:`~torch_layerlr.optim.SharpnessLR` to
        re-measure :math:`S` as training moves."""
        from torch_layerlr.optim.sharpness_rate import measure_sharpness

        params, tensors = list(params), []
        for i, item in enumerate(params):
            if isinstance(item, dict):  # a param group: its params listed once, for the measurement and the base
                group = item["params"]
                params[i] = dict(item, params=[group] if isinstance(group, Tensor) else list(group))
                tensors += params[i]["params"]
            else:
                tensors.append(item)
        s = measure_sharpness(loss_fn, tensors, seed=seed).value
        return cls(params, None, None, kwargs.pop("depth", None), tau, kwargs.pop("arch", "chain"), momentum,
                   sharpness=s, **kwargs)
