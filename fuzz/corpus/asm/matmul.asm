# c = aᵀ · b on one NeuronCore: K = 128 (partitions, the contraction), M = 128, N = 512.
#
#   cargo run --release -- sim examples/asm/matmul.asm --chip trn2 \
#       --input a=a.npy --input b=b.npy --output c=c.npy
hbm a: f32[128, 128] input     # K x M: the stationary operand
hbm b: f32[128, 512] input     # K x N: the moving operand
hbm c: f32[128, 512] output    # M x N

# Load both operands into SBUF, casting fp32 -> bf16 on the way (round to nearest even).
dma_copy sb[0:128]@0:bf16[128], a                                      S[0]++
dma_copy sb[0:128]@256:bf16[512], b                                    S[1]++
# PSUM bank 0 <- stationaryᵀ · moving, accumulated in fp32.
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512]  S[0]>=1 S[1]>=1 S[2]++
# Evacuate PSUM to SBUF on the Vector engine, then store to HBM.
tensor_copy sb[0:128]@1280:f32[512], ps[0:128]@0:f32[512]              S[2]>=1 S[3]++
dma_copy c, sb[0:128]@1280:f32[512]                                    S[3]>=1
