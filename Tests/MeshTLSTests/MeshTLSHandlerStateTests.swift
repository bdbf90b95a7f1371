import MeshTLS
import NIOCore
import NIOEmbedded
import Testing

/// `MeshTLSHandler`'s states carry their data, and an event its state cannot take stops
/// the process with the state named, instead of being ignored. Run as an exit test: the
/// body runs in a child process, which must fail and say why.
@Suite struct MeshTLSHandlerStateTests {
    @Test func ciphertextBeforeTheChannelIsActiveStopsWithTheStateNamed() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let harness = try TLSHarness()
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(
                MeshTLSHandler(
                    context: try TLSContext(credentials: try harness.credentials("orders")),
                    expectedPeer: nil,
                    logger: TLSHarness.logger
                )
            )
            // Never active, so no handshake started: no read was asked for.
            try channel.writeInbound(ByteBuffer(string: "not yet"))
        }.map { result in
            let message = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(
                message.contains("MeshTLSHandler: a read before the channel was active in state idle"),
                "\(message)"
            )
        }
    }
}
