"""The networks: the architecture plan read from a config (`architecture`, torch-free), the PyTorch classes
(`pytorch`), the Keras 3 classes (`keras`), and what both backends share (`outputs`, `attention_bias`)."""
