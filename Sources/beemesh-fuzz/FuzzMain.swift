import FuzzTargets

#if canImport(Glibc)
    import Glibc
#endif

// `beemesh-fuzz`: the parsers' libFuzzer targets (`tools/fuzz TARGET`).
//
// Built with `-sanitize=fuzzer,address -D FUZZING` (tools/fuzz does), `main` hands the
// command line to libFuzzer's driver (`LLVMFuzzerRunDriver`), which calls back with
// each input for the target named by BEEMESH_FUZZ_TARGET. Built plainly (the test
// build), it replays files: `beemesh-fuzz TARGET FILE...` runs each through the target
// once.

#if FUZZING
    /// libFuzzer's entry for programs that keep their own `main`.
    @_silgen_name("LLVMFuzzerRunDriver")
    private func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<Int32>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    ) -> Int32

    /// The target of this process, chosen once before the driver starts.
    nonisolated(unsafe) private var selected = FuzzTarget.preface

    /// libFuzzer's callback (its driver names it even when given one).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        selected.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }

    @main
    struct Fuzz {
        static func main() {
            let name = getenv("BEEMESH_FUZZ_TARGET").map { String(cString: $0) } ?? ""
            guard let target = FuzzTarget(rawValue: name) else {
                let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
                printError("beemesh-fuzz: set BEEMESH_FUZZ_TARGET to one of \(names)")
                exit(2)
            }
            selected = target
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(runFuzzerDriver(&argc, &argv, fuzzOneInput))
        }
    }
#else
    @main
    struct Replay {
        static func main() {
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
                let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: " | ")
                printError("usage: beemesh-fuzz \(names) FILE...")
                exit(2)
            }
            for path in arguments.dropFirst() {
                guard let file = fopen(path, "rb") else {
                    printError("beemesh-fuzz: cannot read \(path)")
                    exit(1)
                }
                var bytes: [UInt8] = []
                var chunk = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = fread(&chunk, 1, chunk.count, file)
                    if count <= 0 { break }
                    bytes += chunk[..<count]
                }
                fclose(file)
                target.run(bytes)
            }
        }
    }
#endif

/// A line on standard error (descriptor 2: `stderr` is shared mutable state to Swift 6).
private func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
