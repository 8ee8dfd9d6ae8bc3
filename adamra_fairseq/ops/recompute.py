"""Running an op so that its backward pass recomputes its intermediates instead of keeping them.

``recomputed(op, *tensors, **options)`` returns ``op(*tensors, **options)``
but keeps only the input tensors for the backward pass; the backward pass
runs ``op`` once more with gradients on and differentiates that. The memory
of the op's intermediates (for the chunked causal op: running means, feature
maps, chunk summaries and scores of every rate group) is then needed only
while one op's backward pass runs, at the price of one more forward pass of
the op. The op must be deterministic (no dropout inside). The backward pass
differentiates through a nested autograd call; on the CPU build the first
such call costs a process about 35 MB for good (docs/benchmarks.md).
"""

from typing import Callable, Optional

import torch


class _Recomputed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op: Callable, options: dict, *tensors: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.op, ctx.options = op, options
        ctx.save_for_backward(*tensors)
        return op(*tensors, **options)  # autograd records nothing inside a Function's forward

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        tensors = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(need) if t is not None else None for t, need in zip(tensors, wanted)]
            out = ctx.op(*inputs, **ctx.options)
        differentiable = [x for x, need in zip(inputs, wanted) if need]
        grads = iter(torch.autograd.grad(out, differentiable, grad_out) if differentiable else ())
        return (None, None, *(next(grads) if need else None for need in wanted))


def wants_gradients(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd will differentiate an op of ``tensors`` (None entries allowed): gradients are on and
    one of them requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def recomputed(op: Callable[..., torch.Tensor], *tensors: Optional[torch.Tensor], enabled: bool = True,
               **options) -> torch.Tensor:
    """``op(*tensors, **options)``, keeping only ``tensors`` for the backward pass (None entries allowed); with
    ``enabled=False`` a plain call, whose backward pass keeps what the op's own steps keep."""
    if not enabled or not wants_gradients(*tensors):
        return op(*tensors, **options)
    return _Recomputed.apply(op, options, *tensors)
