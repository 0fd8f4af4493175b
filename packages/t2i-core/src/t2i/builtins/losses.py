"""The core's losses, registered through the same hook as any plugin's."""

from ..hookspecs import hookimpl
from ..losses import BCEConfig, BCELoss, ConditioningAugmentationKL, HingeLoss, MatchingAwareTerm


@hookimpl
def t2i_register_losses(register):
    register("bce", BCELoss, config=BCEConfig, role="adversarial",
             help="Binary cross-entropy on logits, non-saturating G loss; optional one-sided label smoothing")
    register("hinge", HingeLoss, role="adversarial", help="Hinge loss: D relu(1-real)+relu(1+fake), G -fake")
    register("matching_aware", MatchingAwareTerm, role="term",
             help="D term: real image with a mismatched caption (batch rolled by one) is a negative")
    register("ca_kl", ConditioningAugmentationKL, role="term",
             help="G term: KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation (StackGAN); "
                  "needs a generator with it, e.g. -G ca_dim=128",
             # the conformance kit checks it with a generator that has conditioning augmentation
             test_generator="dcgan", test_generator_options={"ngf": 8, "ca_dim": 8})
