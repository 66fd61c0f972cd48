# 64 back-to-back bf16 128x128x512 matmuls accumulating into one PSUM bank: the Tensor engine's
# steady state (the timing model calibrates against it). c = 64 · aᵀ · b.
hbm a: f32[128, 128] input
hbm b: f32[128, 512] input
hbm c: f32[128, 512] output

dma_copy sb[0:128]@0:bf16[128], a                                      S[0]++
dma_copy sb[0:128]@256:bf16[512], b                                    S[1]++
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512]  S[0]>=1 S[1]>=1
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true
nc_matmul ps[0:128]@0:f32[512], sb[0:128]@0:bf16[128], sb[0:128]@256:bf16[512] accumulate=true S[2]++
tensor_copy sb[0:128]@1280:f32[512], ps[0:128]@0:f32[512]              S[2]>=1 S[3]++
dma_copy c, sb[0:128]@1280:f32[512]                                    S[3]>=1
