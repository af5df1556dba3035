r"""Deep *matrix* linear networks :math:`W = W_L\cdots W_1` (research notes, section F.3).

Loss :math:`\frac{1}{2N}\sum_n\|y_n - Wx_n\|^2` (the ½ convention of the scalar paper), so the data enter
through :math:`\Sigma_{xx} = \frac1N\sum x_nx_n^\top` and :math:`\Sigma_{yx} = \frac1N\sum y_nx_n^\top`, and
the global minimum is :math:`T = \Sigma_{yx}\Sigma_{xx}^{-1}` (hidden widths at least its rank).

**Aligned data** (Saxe et al. 2014): :math:`\Sigma_{yx} = \sum_i s_iu_iv_i^\top` with each :math:`v_i` an
eigenvector of :math:`\Sigma_{xx}`, eigenvalue :math:`\lambda_i`.  From a balanced, aligned start each mode
is a scalar chain with :math:`\mu_{xx}\to\lambda_i`, :math:`\mu_{yx}\to s_i`, so its sharpness is

.. math:: \kappa_i(L) = L\,\lambda_i\,(s_i/\lambda_i)^{2-2/L}   \qquad\text{(F.3; eq. 13 per mode)}

(:func:`mode_sharpness`).  The full Hessian at the balanced minimum has more than the modes' own directions:
a perturbation of entry (i, j) in the rotated layers couples output mode i and input direction j with
eigenvalue :math:`\lambda_j\sum_{l=1}^{L}u_i^{2(L-l)/L}u_j^{2(l-1)/L}` (:math:`u = s/\lambda`), which is
:math:`\kappa_j` for i = j but can exceed every :math:`\kappa` when input variances differ between modes
(e.g. L = 2: :math:`(u_i+u_j)\lambda_j`).  :func:`aligned_hessian_spectrum` lists these; its maximum is the
exact stability limit (research note F.3 says "stable iff :math:`\eta < 2/\max_i\kappa_i`": that holds for
whitened inputs, not in general).

**Any data**: at a balanced factorisation the product map's Jacobian has
:math:`\|J\|^2 = L\,\sigma_{\max}(T)^{2-2/L}`, so the top Hessian eigenvalue is at most

.. math:: S_{\rm bound} = L\,\lambda_{\max}(\Sigma_{xx})\,\sigma_{\max}(T)^{2-2/L}
          \qquad\text{(F.3, conservative bound)}

(:func:`sharpness_bound`), which is the scalar chain's eq. 13 with
:math:`(\mu_{xx}, \mu_{yx}) = (\lambda_{\max}, \lambda_{\max}\sigma_{\max}(T))`: the effective moments
:attr:`DataMoments.mu_xx`, :attr:`DataMoments.mu_yx` of matrix data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from torch_layerlr.theory.scalar_chain import _depth, _out, sharpness

__all__ = ["DataMoments", "data_moments", "mode_sharpness", "aligned_hessian_spectrum", "aligned_sharpness",
           "sharpness_bound", "data_sharpness"]


@dataclasses.dataclass(frozen=True)
class DataMoments:
    """Second moments of a data set and what the depth-scaling rules need from them."""

    sigma_xx: np.ndarray  #: (d_in, d_in) input covariance (uncentred), 1/N normalised
    sigma_yx: np.ndarray  #: (d_out, d_in) input-output correlation
    n: int  #: number of samples
    tol: float = 1e-6  #: relative tolerance of :attr:`aligned`

    @property
    def scalar(self) -> bool:
        """One input and one output: the paper's scalar setting."""
        return self.sigma_xx.shape == (1, 1) and self.sigma_yx.shape == (1, 1)

    @property
    def lam(self) -> np.ndarray:
        """Eigenvalues of :math:`\\Sigma_{xx}`, descending."""
        return np.linalg.eigvalsh(self.sigma_xx)[::-1]

    @property
    def target(self) -> np.ndarray:
        """The global minimum :math:`T = \\Sigma_{yx}\\Sigma_{xx}^{-1}` (least squares, pseudo-inverse)."""
        return self.sigma_yx @ np.linalg.pinv(self.sigma_xx)

    def _modes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u, s, vt = np.linalg.svd(self.sigma_yx, full_matrices=False)
        keep = s > s.max(initial=0.0) * 1e-12
        return s[keep], vt[keep], u[:, keep]

    @property
    def s(self) -> np.ndarray:
        """Nonzero singular values :math:`s_i` of :math:`\\Sigma_{yx}`, descending."""
        return self._modes()[0]

    @property
    def mode_lam(self) -> np.ndarray:
        """Input variance along each mode's input direction, :math:`\\lambda_i = v_i^\\top\\Sigma_{xx}v_i`."""
        _, vt, _ = self._modes()
        return np.einsum("ij,jk,ik->i", vt, self.sigma_xx, vt)

    @property
    def misalignment(self) -> float:
        r""":math:`\max_i\|\Sigma_{xx}v_i - \lambda_iv_i\| / \|\Sigma_{xx}\|`: 0 for aligned data."""
        _, vt, _ = self._modes()
        if vt.shape[0] == 0:
            return 0.0
        resid = vt @ self.sigma_xx - self.mode_lam[:, None] * vt
        return float(np.linalg.norm(resid, axis=1).max() / np.linalg.norm(self.sigma_xx, 2))

    @property
    def aligned(self) -> bool:
        """Whether every mode's input direction is an eigenvector of the input covariance (within ``tol``)."""
        return self.misalignment <= self.tol

    @property
    def lam_rest(self) -> np.ndarray:
        """Eigenvalues of :math:`\\Sigma_{xx}` on the input directions that carry no signal (aligned data)."""
        _, vt, _ = self._modes()
        q, _ = np.linalg.qr(vt.T, mode="complete")
        rest = q[:, vt.shape[0]:]
        return np.linalg.eigvalsh(rest.T @ self.sigma_xx @ rest)[::-1] if rest.shape[1] else np.zeros(0)

    @property
    def mu_xx(self) -> float:
        """Scalar data: :math:`\\mu_{xx}`.  Matrix data: :math:`\\lambda_{\\max}(\\Sigma_{xx})` (bound's moment)."""
        return float(self.sigma_xx[0, 0]) if self.scalar else float(self.lam[0])

    @property
    def mu_yx(self) -> float:
        """Scalar data: :math:`\\mu_{yx}`.  Matrix data: :math:`\\lambda_{\\max}\\sigma_{\\max}(T)` (bound's)."""
        if self.scalar:
            return float(self.sigma_yx[0, 0])
        return float(self.lam[0] * np.linalg.norm(self.target, 2))


def _numpy(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().cpu().numpy()
    out = np.asarray(a, dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2:
        raise ValueError(f"{name} must have shape (N,) or (N, features), got {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} has non-finite entries")
    return out


def data_moments(x: Any, y: Any, tol: float = 1e-6) -> DataMoments:
    r"""Estimate :math:`\Sigma_{xx}`, :math:`\Sigma_{yx}` from samples ``x`` (N,) or (N, d_in) and ``y`` (N,)
    or (N, d_out).  For scalar data :attr:`DataMoments.mu_xx`, :attr:`DataMoments.mu_yx` are the paper's
    :math:`\mu_{xx} = \frac1N\sum x^2`, :math:`\mu_{yx} = \frac1N\sum yx`."""
    xs, ys = _numpy(x, "x"), _numpy(y, "y")
    if xs.shape[0] != ys.shape[0] or xs.shape[0] == 0:
        raise ValueError(f"x and y need the same, nonzero number of samples, got {xs.shape[0]} and {ys.shape[0]}")
    n = xs.shape[0]
    return DataMoments(sigma_xx=xs.T @ xs / n, sigma_yx=ys.T @ xs / n, n=n, tol=tol)


def mode_sharpness(depth: Any, lam: Any, s: Any) -> Any:
    r"""Per-mode sharpness :math:`\kappa_i(L) = L\lambda_i(s_i/\lambda_i)^{2-2/L}` (F.3): eq. 13 per mode."""
    return sharpness(depth, lam, s, "chain")


def aligned_hessian_spectrum(depth: int, lam: Any, s: Any, lam_rest: Any = (), out_null: int = 0) -> np.ndarray:
    r"""Nonzero Hessian eigenvalues (descending, with multiplicity) at the balanced global minimum of a depth-L
    matrix network on aligned data, hidden widths at least the number of modes.

    ``lam``, ``s``: each signal mode's input variance and singular value (:math:`u_i = s_i/\lambda_i`);
    ``lam_rest``: input-covariance eigenvalues of the directions without signal; ``out_null``: number of
    output directions without signal.  In the layers' rotated bases the Hessian is block diagonal over
    (output i, input j) pairs, each block rank one over the L layers with eigenvalue
    :math:`\lambda_j\sum_{l=1}^{L}d_i^{2(L-l)}d_j^{2(l-1)}`, :math:`d^2 = u^{2/L}` and :math:`d = 0` off the
    signal (a zero power still counts 1).
    """
    L = int(_depth(depth))
    lam_m = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    s_m = np.atleast_1d(np.asarray(s, dtype=np.float64))
    rest = np.atleast_1d(np.asarray(lam_rest, dtype=np.float64))
    if lam_m.shape != s_m.shape or (lam_m <= 0).any() or (s_m <= 0).any():
        raise ValueError("lam and s must be positive and of equal length")
    d2 = (s_m / lam_m) ** (2.0 / L)  # layer singular value squared, per mode
    powers = np.arange(L, dtype=np.float64)
    # mode i (rows) x mode j (columns): lam_j * sum_l d2_i^(L-l) d2_j^(l-1)
    blocks = (d2[:, None, None] ** (L - 1 - powers)) * (d2[None, :, None] ** powers)
    values = [(lam_m[None, :] * blocks.sum(-1)).ravel()]
    tail = d2 ** (L - 1)  # u^(2 - 2/L)
    values.append(np.repeat(lam_m * tail, int(out_null)))  # output-null row i, mode column j: only l = L
    values.append((rest[None, :] * tail[:, None]).ravel())  # mode row i, signal-free column j: only l = 1
    if L == 1:  # the single layer sees every (i, j): the Hessian is Sigma_xx (x) I
        values.append(np.repeat(rest, int(out_null)))
    out = np.concatenate(values)
    return np.sort(out[out > 0])[::-1]


def aligned_sharpness(depth: int, moments: DataMoments) -> float:
    """Exact top Hessian eigenvalue at the balanced minimum for aligned data (``ValueError`` otherwise)."""
    if not moments.aligned:
        raise ValueError(f"the data are not aligned (misalignment {moments.misalignment:.3g} > tol "
                         f"{moments.tol:g}); use sharpness_bound")
    out_null = moments.sigma_yx.shape[0] - moments.s.shape[0]
    spec = aligned_hessian_spectrum(depth, moments.mode_lam, moments.s, moments.lam_rest, out_null)
    return float(spec[0]) if spec.size else 0.0


def sharpness_bound(depth: Any, moments: DataMoments) -> Any:
    r"""Conservative sharpness for any data: :math:`L\,\lambda_{\max}(\Sigma_{xx})\,\sigma_{\max}(T)^{2-2/L}`."""
    lam_max = moments.lam[0]
    t_max = np.linalg.norm(moments.target, 2)
    return sharpness(depth, lam_max, lam_max * t_max, "chain")


def data_sharpness(depth: Any, moments: DataMoments, arch: str = "chain") -> Any:
    """The sharpness a depth-scaled rule should use for these data: the closed form (eq. 13/27/33) for scalar
    data, the exact aligned value for aligned matrix data, and :func:`sharpness_bound` otherwise."""
    if moments.scalar:
        return sharpness(depth, moments.mu_xx, moments.mu_yx, arch)
    if arch != "chain":
        raise ValueError(f"arch={arch!r} is defined for scalar data only (one input, one output)")
    if moments.aligned:
        return _out(np.asarray(aligned_sharpness(depth, moments)))
    return sharpness_bound(depth, moments)
