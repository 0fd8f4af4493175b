"""The core's losses, registered through the same hook as any plugin's."""

from ..hookspecs import hookimpl
from ..losses import (
    BCEConfig,
    BCELoss,
    ConditioningAugmentationKL,
    FeatureMatchingConfig,
    FeatureMatchingTerm,
    HingeLoss,
    LSGANConfig,
    LSGANLoss,
    MAGPConfig,
    MatchingAwareGradientPenalty,
    MatchingAwareTerm,
    R1Penalty,
    WGANGradientPenalty,
)
from ..terms import ContrastiveConfig, ContrastiveTerm, PerceptualConfig, PerceptualTerm


@hookimpl
def t2i_register_losses(register):
    register("bce", BCELoss, config=BCEConfig, role="adversarial",
             help="Binary cross-entropy on logits, non-saturating G loss; optional one-sided label smoothing")
    register("hinge", HingeLoss, role="adversarial", help="Hinge loss: D relu(1-real)+relu(1+fake), G -fake")
    register("lsgan", LSGANLoss, config=LSGANConfig, role="adversarial",
             help="Least squares (Mao et al. 2017): D ½(real-b)²+½(fake-a)², G ½(fake-c)²; a, b, c = 0, 1, 1",
             # the kit checks that d_fake falls from logit 2 to -2, which ½x² (a = 0) cannot: ½(-2)² = ½2²
             test_options={"a": -1.0})
    register("matching_aware", MatchingAwareTerm, role="term",
             help="D term: real image with a mismatched caption (batch rolled by one) is a negative")
    register("ca_kl", ConditioningAugmentationKL, role="term",
             help="G term: KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation (StackGAN); "
                  "needs a generator with it, e.g. -G ca_dim=128",
             # the conformance kit checks it with a generator that has conditioning augmentation
             test_generator="dcgan", test_generator_options={"ngf": 8, "ca_dim": 8})
    register("feature_matching", FeatureMatchingTerm, config=FeatureMatchingConfig, role="term",
             help="G term: feature matching (Salimans et al. 2016), per layer mean((r-f)²)/mean(r²) of D's batch-mean "
                  "features, averaged over layers: 0 when fake feature means equal real ones, ~1 when fake means are 0")
    register("r1", R1Penalty, role="term",
             help="D term: R1 gradient penalty E||grad_x D(real)||² (Mescheder et al. 2018); gamma = 2 * weight")
    register("ma_gp", MatchingAwareGradientPenalty, config=MAGPConfig, role="term",
             help="D term: DF-GAN's matching-aware gradient penalty k*E||grad_(x,e) D(real, text)||^p (k=2, p=6)")
    register("wgan_gp", WGANGradientPenalty, role="term",
             help="D term: WGAN-GP E(||grad D(x_hat)||-1)² on real/fake interpolates (Gulrajani et al. 2017); "
                  "weight = lambda (10)")
    register("perceptual", PerceptualTerm, config=PerceptualConfig, role="term",
             help="G term: VGG16 feature distance between generated image i and the real image i whose caption G was "
                  "given (no pixel alignment: a content prior toward that real image, not a reconstruction; "
                  "compare=gram for layout-free style statistics); per layer normalised; needs VGG16 weights")
    register("contrastive", ContrastiveTerm, config=ContrastiveConfig, role="term",
             help="G term: InfoNCE of a frozen CLIP's image embeddings of generated images against their captions' "
                  "text embeddings (sentence-level DAMSM with CLIP); needs CLIP weights")
