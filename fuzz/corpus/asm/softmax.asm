# y = softmax(x) along the free axis of each partition (row), numerically stable:
# y[p, f] = exp(x[p, f] - max_f x[p, :]) / Σ_f exp(x[p, f] - max_f x[p, :]).
#
#   cargo run --release -- sim examples/asm/softmax.asm --chip trn2 --input x=x.npy --output y=y.npy
hbm x: f32[128, 512] input
hbm y: f32[128, 512] output

dma_copy sb[0:128]@0:f32[512], x                                       S[0]++
# negmax[p] = -max_f x[p, f]                        (Vector engine)
tensor_reduce sb[0:128]@2048:f32[1], sb[0:128]@0:f32[512] op=max negate=true   S[0]>=1 S[1]++
# e = exp(x + negmax), sum[p] = Σ_f e[p, f]           (Scalar engine, fused add-reduction)
activation sb[0:128]@2052:f32[512], sb[0:128]@0:f32[512] func=exp bias=sb[0:128]@2048:f32[1] reduce=sb[0:128]@4100:f32[1]  S[1]>=1 S[2]++
# y = e / sum                                          (Vector engine, per-partition operand)
tensor_scalar sb[0:128]@4104:f32[512], sb[0:128]@2052:f32[512] op0=divide operand0=sb[0:128]@4100:f32[1]  S[2]>=1 S[3]++
dma_copy y, sb[0:128]@4104:f32[512]                                    S[3]>=1
