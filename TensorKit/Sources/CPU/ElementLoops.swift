/// Elementwise loops specialised per operation. Each operation is a type (or a small struct holding
/// its constants) rather than a closure: a closure captured by the parallel loop stays an opaque call
/// per element and never vectorises, while a generic parameter is specialised and inlined (8–10×
/// faster on float32 add/mul here).

protocol UnaryElementOp {
    associatedtype Element
    associatedtype Result
    func apply(_ x: Element) -> Result
}

protocol BinaryElementOp {
    associatedtype Element: CPUFloat
    func apply(_ a: Element, _ b: Element) -> Element
}

// MARK: strided unary map (also used for copies and dtype conversion)

/// dst[i] = op(src[i]) over same-shaped strided views; `dst` and `src` point at element 0.
func stridedMap<Op: UnaryElementOp>(_ op: Op, _ layout: StridedLayout,
                                     _ dst: UnsafeMutablePointer<Op.Result>, _ src: UnsafePointer<Op.Element>) {
    let n = layout.innerCount
    parallelFor(layout.rowCount, minimumPerChunk: max(1, 65_536 / max(n, 1))) { rows in
        stridedMapRows(op, layout, dst, src, rows)
    }
}

@inline(never)
func stridedMapRows<Op: UnaryElementOp>(_ op: Op, _ layout: StridedLayout, _ dst: UnsafeMutablePointer<Op.Result>,
                                         _ src: UnsafePointer<Op.Element>, _ rows: Range<Int>) {
    let n = layout.innerCount, ds = layout.innerStride(0), ss = layout.innerStride(1)
    layout.forEachRow(rows) { o in
        let d = dst + o[0], s = src + o[1]
        if ds == 1 && ss == 1 {
            for i in 0..<n { d[i] = op.apply(s[i]) }
        } else {
            for i in 0..<n { d[i * ds] = op.apply(s[i * ss]) }
        }
    }
}

/// y[i] = op(x[i]) over contiguous buffers.
func contiguousMap<Op: UnaryElementOp>(_ op: Op, _ x: UnsafePointer<Op.Element>, _ y: UnsafeMutablePointer<Op.Result>, _ n: Int) {
    parallelFor(n, minimumPerChunk: 65_536) { range in contiguousMapRange(op, x, y, range) }
}

@inline(never)
func contiguousMapRange<Op: UnaryElementOp>(_ op: Op, _ x: UnsafePointer<Op.Element>, _ y: UnsafeMutablePointer<Op.Result>,
                                            _ range: Range<Int>) {
    for i in range { y[i] = op.apply(x[i]) }
}

// MARK: binary map over broadcast views

/// out[i] = op(a[i], b[i]) where a and b are same-shaped views (zero strides broadcast); out is contiguous.
func broadcastMap<Op: BinaryElementOp>(_ op: Op, _ layout: StridedLayout, _ a: UnsafePointer<Op.Element>,
                                        _ b: UnsafePointer<Op.Element>, _ out: UnsafeMutablePointer<Op.Element>) {
    let n = layout.innerCount
    if layout.shape.count == 1 {
        parallelFor(n, minimumPerChunk: 65_536) { range in broadcastMapRun(op, layout, a, b, out, range) }
    } else {
        parallelFor(layout.rowCount, minimumPerChunk: max(1, 65_536 / max(n, 1))) { rows in
            broadcastMapRows(op, layout, a, b, out, rows)
        }
    }
}

/// One long run (all axes merged): elements `range` of it.
@inline(never)
func broadcastMapRun<Op: BinaryElementOp>(_ op: Op, _ layout: StridedLayout, _ a: UnsafePointer<Op.Element>,
                                          _ b: UnsafePointer<Op.Element>, _ out: UnsafeMutablePointer<Op.Element>,
                                          _ range: Range<Int>) {
    let sa = layout.innerStride(0), sb = layout.innerStride(1)
    // The unit-stride cases are spelled out: with `i * sa` the compiler does not vectorise the loop.
    if sa == 1 && sb == 1 {
        for i in range { out[i] = op.apply(a[i], b[i]) }
    } else if sa == 1 && sb == 0 {
        let bv = b[0]
        for i in range { out[i] = op.apply(a[i], bv) }
    } else if sa == 0 && sb == 1 {
        let av = a[0]
        for i in range { out[i] = op.apply(av, b[i]) }
    } else if sb == 0 {
        let bv = b[0]
        for i in range { out[i] = op.apply(a[i * sa], bv) }
    } else if sa == 0 {
        let av = a[0]
        for i in range { out[i] = op.apply(av, b[i * sb]) }
    } else {
        for i in range { out[i] = op.apply(a[i * sa], b[i * sb]) }
    }
}

@inline(never)
func broadcastMapRows<Op: BinaryElementOp>(_ op: Op, _ layout: StridedLayout, _ a: UnsafePointer<Op.Element>,
                                           _ b: UnsafePointer<Op.Element>, _ out: UnsafeMutablePointer<Op.Element>,
                                           _ rows: Range<Int>) {
    let n = layout.innerCount, sa = layout.innerStride(0), sb = layout.innerStride(1)
    var row = rows.lowerBound
    layout.forEachRow(rows) { o in
        let dst = out + row * n, ar = a + o[0], br = b + o[1]
        if sa == 1 && sb == 1 {
            for i in 0..<n { dst[i] = op.apply(ar[i], br[i]) }
        } else if sa == 1 && sb == 0 {
            let bv = br[0]
            for i in 0..<n { dst[i] = op.apply(ar[i], bv) }
        } else if sa == 0 && sb == 1 {
            let av = ar[0]
            for i in 0..<n { dst[i] = op.apply(av, br[i]) }
        } else if sb == 0 {
            let bv = br[0]
            for i in 0..<n { dst[i] = op.apply(ar[i * sa], bv) }
        } else if sa == 0 {
            let av = ar[0]
            for i in 0..<n { dst[i] = op.apply(av, br[i * sb]) }
        } else {
            for i in 0..<n { dst[i] = op.apply(ar[i * sa], br[i * sb]) }
        }
        row += 1
    }
}

// MARK: operations

struct Identity<T>: UnaryElementOp {
    @inline(__always) func apply(_ x: T) -> T { x }
}

struct FloatToDouble: UnaryElementOp { @inline(__always) func apply(_ x: Float) -> Double { Double(x) } }
struct DoubleToFloat: UnaryElementOp { @inline(__always) func apply(_ x: Double) -> Float { Float(x) } }
struct HalfToFloat: UnaryElementOp { @inline(__always) func apply(_ x: Float16) -> Float { Float(x) } }
struct FloatToHalf: UnaryElementOp { @inline(__always) func apply(_ x: Float) -> Float16 { Float16(x) } }
struct BFloat16ToFloat: UnaryElementOp { @inline(__always) func apply(_ x: UInt16) -> Float { floatFromBFloat16Bits(x) } }
struct FloatToBFloat16: UnaryElementOp { @inline(__always) func apply(_ x: Float) -> UInt16 { bfloat16Bits(x) } }

struct Negate<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { -x } }
struct SquareRoot<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { x.squareRoot() } }
struct ReciprocalSquareRoot<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { 1 / x.squareRoot() } }
struct Square<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { x * x } }
struct Absolute<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { Swift.abs(x) } }
struct Relu<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { x > 0 ? x : 0 } }
struct Reciprocal<T: CPUFloat>: UnaryElementOp { @inline(__always) func apply(_ x: T) -> T { 1 / x } }
struct AddScalar<T: CPUFloat>: UnaryElementOp { let c: T; @inline(__always) func apply(_ x: T) -> T { x + c } }
struct MulScalar<T: CPUFloat>: UnaryElementOp { let c: T; @inline(__always) func apply(_ x: T) -> T { x * c } }
struct Clamp<T: CPUFloat>: UnaryElementOp {
    let low: T, high: T
    // NaN stays NaN, like torch.clamp.
    @inline(__always) func apply(_ x: T) -> T { x < low ? low : (x > high ? high : x) }
}

struct Add<Element: CPUFloat>: BinaryElementOp { @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a + b } }
struct Subtract<Element: CPUFloat>: BinaryElementOp { @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a - b } }
struct Multiply<Element: CPUFloat>: BinaryElementOp { @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a * b } }
struct Divide<Element: CPUFloat>: BinaryElementOp { @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a / b } }
struct Power<Element: CPUFloat>: BinaryElementOp { @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { Element.pow(a, b) } }
struct Maximum<Element: CPUFloat>: BinaryElementOp {
    @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a.isNaN || b.isNaN ? .nan : (a > b ? a : b) }
}
struct Minimum<Element: CPUFloat>: BinaryElementOp {
    @inline(__always) func apply(_ a: Element, _ b: Element) -> Element { a.isNaN || b.isNaN ? .nan : (a < b ? a : b) }
}
struct Compare<Element: CPUFloat>: BinaryElementOp {
    let op: BinaryOp
    @inline(__always) func apply(_ a: Element, _ b: Element) -> Element {
        let result: Bool
        switch op {
        case .equal: result = a == b
        case .greater: result = a > b
        case .greaterEqual: result = a >= b
        case .less: result = a < b
        default: result = a <= b
        }
        return result ? 1 : 0
    }
}
