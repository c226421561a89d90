"""Stage 1: the pretraining recipe, the `pretrain` command, the online kNN monitor, the methods
(one file each behind a registry) and accelerator-side augmentation.
"""
