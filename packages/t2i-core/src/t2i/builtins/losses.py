"""The core's losses, registered through the same hook as any plugin's.

Each one's role comes from its class (:func:`t2i.interfaces.loss_role`): an ``AdversarialLoss`` is chosen with
``--loss``, any other ``LossTerm`` is added with ``--term``.

Factories and configs are named by reference (``"module:Name"``) so that listing them imports nothing heavy.
"""

from ..hookspecs import hookimpl


@hookimpl
def t2i_register_losses(register):
    register("bce", "t2i.losses:BCELoss", config="t2i.losses:BCEConfig",
             help="Binary cross-entropy on logits, non-saturating G loss; optional one-sided label smoothing")
    register("hinge", "t2i.losses:HingeLoss", help="Hinge loss: D relu(1-real)+relu(1+fake), G -fake")
    register("lsgan", "t2i.losses:LSGANLoss", config="t2i.losses:LSGANConfig",
             help="Least squares (Mao et al. 2017): D ½(real-b)²+½(fake-a)², G ½(fake-c)²; a, b, c = 0, 1, 1",
             # the kit checks that d_fake falls from logit 2 to -2, which ½x² (a = 0) cannot: ½(-2)² = ½2²
             test_options={"a": -1.0})
    register("matching_aware", "t2i.losses:MatchingAwareTerm",
             help="D term: real image with a mismatched caption (batch rolled by one) is a negative")
    register("ca_kl", "t2i.losses:ConditioningAugmentationKL",
             help="G term: KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation (StackGAN); "
                  "needs a generator with it, e.g. -G ca_dim=128",
             # the conformance kit checks it with a generator that has conditioning augmentation
             test_generator="dcgan", test_generator_options={"ngf": 8, "ca_dim": 8})
    register("feature_matching", "t2i.losses:FeatureMatchingTerm", config="t2i.losses:FeatureMatchingConfig",
             help="G term: feature matching (Salimans et al. 2016), per layer mean((r-f)²)/mean(r²) of D's batch-mean "
                  "features, averaged over layers: 0 when fake feature means equal real ones, ~1 when fake means are 0")
    register("r1", "t2i.losses:R1Penalty", config="t2i.losses:R1Config",
             help="D term: R1 gradient penalty E||grad_x D(real)||² (Mescheder et al. 2018); gamma = 2 * weight; "
                  "every=16 for StyleGAN2's lazy R1")
    register("ma_gp", "t2i.losses:MatchingAwareGradientPenalty", config="t2i.losses:MAGPConfig",
             help="D term: DF-GAN's matching-aware gradient penalty k*E||grad_(x,e) D(real, text)||^p (k=2, p=6), "
                  "tuned for DF-GAN's D whose gradient norms are ~1; with other discriminators lower k, p or the weight")
    register("wgan_gp", "t2i.losses:WGANGradientPenalty",
             help="D term: WGAN-GP E(||grad D(x_hat)||-1)² on real/fake interpolates (Gulrajani et al. 2017); "
                  "weight = lambda (10)")
    register("perceptual", "t2i.terms.perceptual:PerceptualTerm", config="t2i.terms.perceptual:PerceptualConfig",
             help="G term: VGG16 feature distance between generated image i and the real image i whose caption G was "
                  "given (no pixel alignment: a content prior toward that real image, not a reconstruction; "
                  "compare=gram for layout-free style statistics); per layer normalised; needs VGG16 weights")
    register("contrastive", "t2i.terms.contrastive:ContrastiveTerm", config="t2i.terms.contrastive:ContrastiveConfig",
             help="G term: InfoNCE of a frozen CLIP's image embeddings of generated images against their captions' "
                  "text embeddings (sentence-level DAMSM with CLIP); needs CLIP weights")
