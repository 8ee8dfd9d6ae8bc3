"""Layouts of per-head tensors shared by the all-heads ops: rate groups, time-major buffers, packed q/k/v.

The module projects q, k and v with one product by the three maps stacked, a
time-major ``(T, B, sum(widths))`` tensor, and hands the ops ``(B, H, T, W)``
views of it (:func:`time_major_heads`). The all-heads ops write their output
into a time-major buffer (:func:`heads_buffer`), as fairseq's output
projection reads it, and, given the stacked tensor itself
(:func:`qkv_inputs`), return its gradient as one tensor.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch


def rate_groups(head_rates: Sequence[int]) -> List[Tuple[int, int]]:
    """``(rate, heads)`` of each run of consecutive heads that share a rate, in head order."""
    groups: List[Tuple[int, int]] = []
    for rate in head_rates:
        if groups and groups[-1][0] == rate:
            groups[-1] = (rate, groups[-1][1] + 1)
        else:
            groups.append((int(rate), 1))
    return groups


def head_groups(head_rates: Sequence[int]) -> List[Tuple[int, slice]]:
    """``(rate, heads)`` of each run of :func:`rate_groups`, its heads as a slice of the head axis."""
    groups, first = [], 0
    for rate, count in rate_groups(head_rates):
        groups.append((rate, slice(first, first + count)))
        first += count
    return groups


def heads_buffer(batch: int, heads: int, length: int, width: int, dtype, device) -> torch.Tensor:
    """An uninitialised ``(B, H, T, W)`` tensor laid out as ``(T, B, H, W)`` in memory: what fairseq's time-major
    output projection reads, so that the module's ``permute(2, 0, 1, 3).contiguous()`` copies nothing."""
    return torch.empty(length, batch, heads, width, dtype=dtype, device=device).permute(1, 2, 0, 3)


def head_view(x: torch.Tensor, heads: int) -> torch.Tensor:
    """The ``(B, H, T, W)`` view of a time-major ``(T, B, H * W)`` tensor (fairseq's layout), ``heads`` = H."""
    length, batch, _ = x.shape
    return x.view(length, batch, heads, -1).permute(1, 2, 0, 3)


def time_major_heads(packed: torch.Tensor, widths: Sequence[int], heads: int) -> Tuple[torch.Tensor, ...]:
    """The :func:`head_view` of each consecutive part of widths ``widths`` of a time-major ``(T, B, sum(widths))``
    tensor: how the module splits its stacked q/k/v projection into heads."""
    return tuple(head_view(part, heads) for part in packed.split(tuple(widths), dim=-1))


class QKVInputs(NamedTuple):
    """Where an all-heads op's autograd function finds q, k and v among its tensor inputs: three ``(B, H, ., .)``
    tensors (``widths`` None), or one time-major ``(T, B, sum(widths))`` tensor of ``heads`` heads, the stacked
    projection's output, whose gradient is then written as one tensor (for three views of it, autograd would
    concatenate three gradients: a copy of the whole projection's output)."""
    heads: int
    widths: Optional[Tuple[int, ...]] = None

    def unpack(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        return tuple(inputs) if self.widths is None else time_major_heads(inputs[0], self.widths, self.heads)

    def gradient_buffers(self, shapes, dtype, device, reuse: Optional[torch.Tensor] = None
                         ) -> Tuple[Tuple[torch.Tensor, ...], Tuple[torch.Tensor, ...]]:
        """Uninitialised gradients of inputs of ``shapes`` and their q, k, v views; ``reuse``: the packed input
        itself, whose memory then holds its gradient (see :func:`reusable_for_gradient`). Separate inputs get
        contiguous ``(B, H, ., .)`` gradients: time-major ones would save the module a reshape copy each but were
        no faster and, since every rate group's rows touch all their pages, raised the backward pass's peak
        memory."""
        if self.widths is None:
            grads = tuple(torch.empty(shape, dtype=dtype, device=device) for shape in shapes)
            return grads, grads
        buffer = torch.empty(shapes[0], dtype=dtype, device=device) if reuse is None else reuse
        return (buffer,), time_major_heads(buffer, self.widths, self.heads)


def qkv_inputs(q, k, v, packed: Optional[torch.Tensor]) -> Tuple[QKVInputs, Tuple[torch.Tensor, ...]]:
    """The layout and tensor inputs of an all-heads op's autograd function: ``packed`` if given (checked to be the
    tensor whose :func:`time_major_heads` are exactly q, k and v), else q, k and v."""
    if packed is None:
        return QKVInputs(q.size(1)), (q, k, v)
    layout = QKVInputs(q.size(1), tuple(x.size(1) * x.size(-1) for x in (q, k, v)))
    if packed.dim() != 3 or packed.size(-1) != sum(layout.widths) or any(
        view.shape != x.shape or view.stride() != x.stride() or view.data_ptr() != x.data_ptr()
        for view, x in zip(layout.unpack((packed,)), (q, k, v))
    ):
        raise ValueError("packed must be the time-major (T, B, W) tensor whose head views are q, k and v")
    return layout, (packed,)


def reusable_for_gradient(packed: Optional[torch.Tensor], dtype: torch.dtype) -> bool:
    """Whether an op's backward pass may write the packed input's gradient over the packed input itself.

    Only for a tensor that autograd made (not a leaf, which belongs to the caller), contiguous and already in the
    gradient's ``dtype``. Its memory then serves twice: at long inputs the stacked projection (e.g. 100 MB for
    16384 tokens of 8 heads) is kept for the backward pass anyway, and a second buffer of its size would be
    alive next to it. The caller promises that nothing reads the packed tensor after the op; a second backward
    pass through the same graph (``retain_graph=True``) is refused (:func:`refuse_second_backward`).
    """
    return packed is not None and packed.grad_fn is not None and packed.dtype == dtype and packed.is_contiguous()


def refuse_second_backward(ctx) -> None:
    """Called first in the backward pass of an op whose ``ctx.reuse_input`` says it writes gradients over its packed
    input: raises if that pass already ran on ``ctx``, else records that it runs now."""
    overwritten, ctx.input_overwritten = getattr(ctx, "input_overwritten", False), ctx.reuse_input
    if overwritten:
        raise RuntimeError(
            "AdaMRA's attention wrote its input's gradient over the input, so its backward pass can run only once: "
            "call backward once (no retain_graph=True), or set MultiResolutionAttention.reuse_projection_memory = False"
        )
