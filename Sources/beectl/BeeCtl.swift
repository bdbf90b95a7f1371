import ArgumentParser
import Foundation
import MeshIdentity

@main
struct BeeCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beectl",
        abstract: "Operate a BeeMesh trust domain and its workloads.",
        subcommands: [
            CACommand.self, ApplyCommand.self, GetCommand.self, DeleteCommand.self, LogsCommand.self, FlowsCommand.self,
            PolicyCommand.self, DHTCommand.self, RaftCommand.self,
        ]
    )
}

/// A `--ttl` value such as `24h` or `720h`.
struct TTL: ExpressibleByArgument {
    let seconds: Double

    init?(argument: String) {
        guard let seconds = DurationString.parse(argument), seconds > 0 else { return nil }
        self.seconds = seconds
    }

    init(seconds: Double) { self.seconds = seconds }
}

/// Turns library errors into one clear line and a non-zero exit.
func runReporting(_ body: () throws(IdentityError) -> Void) throws {
    do {
        try body()
    } catch {
        FileHandle.standardError.write(Data("beectl: \(error.reason)\n".utf8))
        throw ExitCode(2)
    }
}
