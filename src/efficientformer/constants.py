"""Facts the whole package shares, each written once: file names, head names, hub keywords, the smallest
image, the activations a config may name, and the ImageNet statistics. Torch-free, import-free."""

from __future__ import annotations

# -- files of a saved model (transformers' names, so that transformers reads our folders and we read its)
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_BIN_NAME = "pytorch_model.bin"
TF_WEIGHTS_NAME = "tf_model.h5"
PT_WEIGHTS_NAMES = (SAFETENSORS_NAME, PYTORCH_BIN_NAME)  # in the order they are preferred when both exist

# -- state-dict names
BASE_PREFIX = "efficientformer"  # the backbone's attribute in the classifier classes (transformers' name)
CLASS_HEAD = "classifier"
DISTILLATION_HEAD = "distillation_classifier"
HEADS = (CLASS_HEAD, DISTILLATION_HEAD)

# -- keyword arguments that reach the Hugging Face hub (from_pretrained, load_checkpoint, convert, ...)
HUB_KEYWORDS = ("revision", "cache_dir", "local_files_only", "token")

# -- geometry: the stem halves twice and each of three downsamples halves again, so the last stage sees
# 1/32 of the image; an image smaller than 32 pixels on a side leaves no token.
REDUCTION = 32
MIN_IMAGE_SIZE = REDUCTION

# -- activations a config's `hidden_act` may name (each backend maps these names to its own functions)
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "relu6", "silu", "swish", "tanh", "sigmoid")

# -- ImageNet statistics, used by the released checkpoints' preprocessing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# -- timm and the original release use LayerNorm's default epsilon; transformers' configs say 1e-12
TIMM_LAYER_NORM_EPS = 1e-5
