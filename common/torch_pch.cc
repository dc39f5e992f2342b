// Compiles the shared LibTorch precompiled header (see common/torch.cmake).
