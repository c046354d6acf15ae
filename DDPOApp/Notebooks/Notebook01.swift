// Generated from notebooks-md/01-tensors-and-autograd.md by scripts/extract-notebooks.py. Do not edit.
import Foundation
import RLAlgorithms

func notebook01(output: @escaping (String) -> Void = { Swift.print($0) }) throws -> Double {
    func print(_ items: Any...) { output(items.map { "\($0)" }.joined(separator: " ")) }
    let x = Tensor((0..<6).map(Double.init), shape: [2, 3])
    print("x:", x.shape, x.toArray())

    let t = x.transposed()                 // a view: strides swapped, nothing copied
    print("transposed:", t.shape, "contiguous:", t.isContiguous, t.toArray())

    let column = x.slice(1, 1, 2)          // elements [:, 1:2]
    print("column 1:", column.toArray())

    let tiled = column.expand([2, 4])      // broadcast view with stride 0
    print("expanded:", tiled.toArray())

    let bias = Tensor([10, 20, 30], shape: [3])
    let shifted = x + bias
    print("x + bias:", shifted.toArray())
    print("row sums:", shifted.sum(axis: 1).toArray(), "column means:", shifted.mean(axis: 0).toArray())

    let halves = Tensor([0.1, 1.5, 1000.25], shape: [3]).to(.float16)
    print("float16 round trip:", halves.to(.float32).toArray())

    let w = Tensor([2.0, -1.0, 0.5], shape: [3]).requiringGrad()
    let input = Tensor([1.0, 3.0, -2.0], shape: [3])
    let y = (w * input).tanh().sum()       // y = Σ tanh(wᵢ xᵢ)
    y.backward()
    print("y =", y.item(), " dy/dw =", w.grad!.toArray())   // xᵢ (1 − tanh²(wᵢ xᵢ))

    let frozen = withNoGrad { (w * input).exp() }
    print("recorded a graph inside withNoGrad:", frozen.gradFn != nil)

    var generator = PhiloxGenerator(seed: 0)
    let xs = Tensor((0..<64).map { -1 + 2 * Double($0) / 63 }, shape: [64, 1])
    let targets = (xs * 3).sin()

    func layer(_ fanIn: Int, _ fanOut: Int) -> (Tensor, Tensor) {
        let scale = 1 / Double(fanIn).squareRoot()
        let weight = Tensor.randn([fanOut, fanIn], generator: &generator, std: scale).requiringGrad()
        return (weight, Tensor.zeros([fanOut]).requiringGrad())
    }
    let (w1, b1) = layer(1, 32), (w2, b2) = layer(32, 32), (w3, b3) = layer(32, 1)
    let parameters = [w1, b1, w2, b2, w3, b3]
    var velocity = parameters.map { Tensor.zeros(like: $0) }

    func predict(_ x: Tensor) -> Tensor {
        let h1 = linear(x, weight: w1, bias: b1).tanh()
        let h2 = linear(h1, weight: w2, bias: b2).tanh()
        return linear(h2, weight: w3, bias: b3)
    }

    var finalLoss = 0.0
    for step in 0..<1500 {
        for p in parameters { p.grad = nil }
        let loss = (predict(xs) - targets).square().mean()
        loss.backward()
        withNoGrad {
            for (i, p) in parameters.enumerated() {
                velocity[i] = velocity[i] * 0.9 + p.grad!
                p.assign(p - velocity[i] * 0.05)
            }
        }
        finalLoss = loss.item()
        if step % 300 == 0 { print("step \(step): loss \(finalLoss)") }
    }
    print("final loss:", finalLoss)

    final class MLP: Module {
        let layers: [Linear]
        init(widths: [Int], generator: inout PhiloxGenerator) {
            var built: [Linear] = []
            for (fanIn, fanOut) in zip(widths, widths.dropFirst()) {
                built.append(Linear(fanIn, fanOut, generator: &generator))
            }
            layers = built
        }
        func callAsFunction(_ x: Tensor) -> Tensor {
            var h = x
            for (i, layer) in layers.enumerated() {
                h = layer(h)
                if i < layers.count - 1 { h = h.tanh() }
            }
            return h
        }
    }

    let model = MLP(widths: [1, 32, 32, 1], generator: &generator)
    print("parameters:", model.namedParameters().map { $0.0 })   // layers.0.weight, layers.0.bias, …
    let optimizer = AdamW(parameters: model.trainableParameters(), lr: 0.01, weightDecay: 0)

    var moduleLoss = 0.0
    for step in 0..<800 {
        optimizer.zeroGrad()
        let loss = (model(xs) - targets).square().mean()
        loss.backward()
        clipGradNorm(model.trainableParameters(), maxNorm: 1.0)
        optimizer.step()
        moduleLoss = loss.item()
        if step % 200 == 0 { print("step \(step): loss \(moduleLoss)") }
    }
    print("final loss with Module + AdamW:", moduleLoss)
    return moduleLoss
}
