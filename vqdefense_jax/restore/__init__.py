"""Restoration of de-identified images, after "Visualization Comparison of GAN for Reconstructing De-identified
Image Dataset using Attention": a CycleGAN ResNet generator with CBAM after every residual block restores
mosaicked regions against a PatchGAN (adversarial + L1 loss), and Grad-CAM of the CBAM layers, scoring D(G(x)),
shows where the restorer attends; on the shared core."""
