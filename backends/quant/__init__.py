"""Quantized weights in memory: GGUF blocks decoded to integer codes (`blocks`), repacked into
torch's int4/int8 weight formats (`pack`), run by drop-in modules (`modules`) through kernels
chosen per CPU and batch size by measurement (`kernels`), and a whole GGUF model built that way
(`gguf_model`)."""
