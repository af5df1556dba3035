"""One step of the engine's recipe pipeline, written plainly in float64 from its documentation (recipe.h's NOTEs),
per tensor and per stage: the oracle of the op-boundary fuzz (tests/test_fuzz_op.py).

    gradient -> (unscale, sign) -> slow-gradient filter -> weight decay -> moments -> trust ratio -> update
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def _norm(x):
    return math.sqrt(float((x * x).sum()))


def recipe_step(recipe, params, grads, filters, exp_avgs, exp_avg_sqs, steps, *, lr, lr_mult, weight_decay, blend,
                trust_mask, filter_coef=None, grad_scale=None, found_inf=None):
    """The values after one step, all float64: dict of lists params, grads, filters, exp_avgs, exp_avg_sqs, steps
    and the trust ratios. Inputs are read, never written."""
    r = recipe
    n = len(params)
    out = {k: [t.detach().to(F64).clone() for t in v] for k, v in dict(
        params=params, grads=grads, filters=filters, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs).items()}
    out["steps"] = [float(s) for s in steps]
    out["ratios"] = [1.0] * n
    if found_inf is not None and float(found_inf) != 0.0:
        return out
    scale = 1.0 if grad_scale is None else float(grad_scale)
    for t in range(n):
        p = out["params"][t]
        g = out["grads"][t] * ((-1.0 if r.maximize else 1.0) / scale)
        step = out["steps"][t] + 1.0
        eta = float(lr) * float(lr_mult[t])
        wd = float(weight_decay[t])

        # slow-gradient filter (NOTE: [filter stage])
        if r.filter == "grokfast":
            alpha = 0.0 if step == 1.0 else float(filter_coef[0])
            f = alpha * out["filters"][t] + (1 - alpha) * g
            out["filters"][t] = f
            g = g + r.filter_lambda * f
        elif r.filter == "blend":
            gate = float(filter_coef[1])
            keep_f = gate * (1.0 - float(blend[t]))
            if gate != 0.0:
                alpha = float(filter_coef[0])
                out["filters"][t] = alpha * out["filters"][t] + (1 - alpha) * g
            g = (1.0 - keep_f) * g + keep_f * out["filters"][t]

        trust_on = r.trust != "none" and float(trust_mask[t]) != 0.0
        w = _norm(p)
        if r.moment == "adam":
            u = g + (wd * p if r.decay == "coupled" else 0.0)
            m = r.beta1 * out["exp_avgs"][t] + (1 - r.beta1) * u
            v = r.beta2 * out["exp_avg_sqs"][t] + (1 - r.beta2) * u * u
            out["exp_avgs"][t], out["exp_avg_sqs"][t] = m, v
            bc1 = 1 - r.beta1 ** step if r.bias_correction else 1.0
            bc2 = 1 - r.beta2 ** step if r.bias_correction else 1.0
            d = (m / bc1) / (v.sqrt() / math.sqrt(bc2) + r.eps) + (wd * p if r.decay == "update" else 0.0)
            ratio = 1.0
            if trust_on:
                dn = _norm(d)
                if w > 0 and dn > 0:
                    ratio = min(max(r.trust_coefficient * min(w, r.norm_max) / (dn + r.trust_eps), r.ratio_min),
                                r.ratio_max)
            if r.trust != "none":
                out["grads"][t] = d  # NOTE: [adam direction in the grad buffer]
            decay = 1 - eta * wd if r.decay == "decoupled" else 1.0
            out["params"][t] = decay * p - eta * ratio * d
        else:
            ratio = 1.0
            if r.trust == "lars":
                gn = _norm(g)
                if trust_on and w > 0 and gn > 0:
                    ratio = r.trust_coefficient * w / (gn + wd * w + r.trust_eps)
            u = g + wd * p if r.decay == "coupled" else g
            if r.trust == "update" and trust_on:
                un = _norm(u)
                if w > 0 and un > 0:
                    ratio = min(max(r.trust_coefficient * min(w, r.norm_max) / (un + r.trust_eps), r.ratio_min),
                                r.ratio_max)
            x = eta * ratio * u if r.trust == "lars" else u
            d = x
            if r.momentum != 0.0:
                buf = x if step == 1.0 else r.momentum * out["exp_avgs"][t] + (1 - r.dampening) * x
                out["exp_avgs"][t] = buf
                d = x + r.momentum * buf if r.nesterov else buf
            decay = 1 - eta * wd if r.decay == "decoupled" else 1.0
            out["params"][t] = decay * p - d if r.trust == "lars" else decay * p - eta * ratio * d
        out["ratios"][t] = ratio
        out["steps"][t] = step
    return out
