"""The core's losses, registered through the same hook as any plugin's."""

from ..hookspecs import hookimpl
from ..losses import BCEConfig, BCELoss, HingeLoss, MatchingAwareTerm


@hookimpl
def t2i_register_losses(register):
    register("bce", BCELoss, config=BCEConfig, role="adversarial",
             help="Binary cross-entropy on logits, non-saturating G loss; optional one-sided label smoothing")
    register("hinge", HingeLoss, role="adversarial", help="Hinge loss: D relu(1-real)+relu(1+fake), G -fake")
    register("matching_aware", MatchingAwareTerm, role="term",
             help="D term: real image with a mismatched caption (batch rolled by one) is a negative")
