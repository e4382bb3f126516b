"""The TFDS builder that writes pact's token datasets.

TFDS looks up a builder's files relative to the package that defines it, so the builder
lives in a package of its own. Import it only where a dataset is written: it imports
tensorflow_datasets (not TensorFlow).
"""

from pact.tfds_builder.token_dataset import DATASET_VERSION, TokenDatasetBuilder, token_features

__all__ = ["DATASET_VERSION", "TokenDatasetBuilder", "token_features"]
