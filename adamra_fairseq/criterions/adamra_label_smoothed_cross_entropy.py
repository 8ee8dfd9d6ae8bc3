"""Label-smoothed cross-entropy plus AdaMRA's weighted load-balancing loss (top1 routing)."""

from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)


@register_criterion(
    "adamra_label_smoothed_cross_entropy", dataclass=LabelSmoothedCrossEntropyCriterionConfig
)
class AdaMRALabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    """``label_smoothed_cross_entropy + W * balance * sample_size``, W = ``--adamra-balance-loss``.

    fairseq divides the summed loss by ``sample_size`` before the update, so the
    balance term enters the gradient with weight W. Models without AdaMRA, or
    with W = 0, get plain label-smoothed cross-entropy.
    """

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        weight = float(getattr(getattr(model, "args", None), "adamra_balance_loss", 0.0) or 0.0)
        balance_fn = getattr(model, "adamra_balance_loss", None)
        balance = balance_fn() if (weight > 0 and balance_fn is not None and model.training) else None
        if balance is not None:
            loss = loss + weight * balance * sample_size
            logging_output["loss"] = loss.data
            logging_output["adamra_balance"] = balance.data * sample_size
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        total = sum(log.get("adamra_balance", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        if total and sample_size:
            metrics.log_scalar("adamra_balance", total / sample_size, sample_size, round=4)
