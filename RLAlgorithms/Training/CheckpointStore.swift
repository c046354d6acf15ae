import Foundation

// Checkpoint directories that are never half-written and never lost to a crash:
//
//   <logdir>/<run_name>/checkpoints/checkpoint_<epoch>/    files + manifest.json
//
// A checkpoint is written into a hidden `.checkpoint_<epoch>.partial-<uuid>` folder; `manifest.json`
// (every file with its byte count) is written last, then the folder is renamed into place. Only then
// are checkpoints beyond the limit removed, oldest first. So a crash at any point leaves the previous
// checkpoint intact, and a checkpoint whose files were truncated or lost afterwards fails its
// manifest check with a message naming the file.
//
//   let store = CheckpointStore(directory: runDir.appendingPathComponent("checkpoints"), limit: 5)
//   let url = try store.save(epoch: 3) { dir in try weights.write(to: dir) }
//   let latest = try CheckpointStore.resolve(URL(fileURLWithPath: config.resume_from))   // parent or one

public struct CheckpointError: Error, CustomStringConvertible, LocalizedError {
    public var path: String
    public var message: String
    public init(path: String, _ message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { "\(path): \(message)" }
    public var errorDescription: String? { description }
}

public struct CheckpointStore {
    public static let prefix = "checkpoint_"
    public static let manifestName = "manifest.json"

    public let directory: URL
    /// How many checkpoints to keep (TRL's `num_checkpoint_limit`).
    public let limit: Int

    public init(directory: URL, limit: Int) {
        self.directory = directory
        self.limit = max(limit, 1)
    }

    struct Manifest: Codable {
        var epoch: Int
        var files: [String: Int]
    }

    /// Writes a checkpoint for `epoch` through `write` (which fills the folder it is given), makes it
    /// complete and visible, then prunes old ones. Returns the checkpoint's URL.
    @discardableResult
    public func save(epoch: Int, write: (URL) throws -> Void) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true)
        let partial = directory.appendingPathComponent(".\(Self.prefix)\(epoch).partial-\(UUID().uuidString)")
        try fm.createDirectory(at: partial, withIntermediateDirectories: false)
        do {
            try write(partial)
            var files: [String: Int] = [:]
            for name in try fm.contentsOfDirectory(atPath: partial.path) where name != Self.manifestName {
                let attributes = try fm.attributesOfItem(atPath: partial.appendingPathComponent(name).path)
                files[name] = (attributes[.size] as? NSNumber)?.intValue ?? 0
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(Manifest(epoch: epoch, files: files)).write(to: partial.appendingPathComponent(Self.manifestName))
            let final = directory.appendingPathComponent("\(Self.prefix)\(epoch)")
            if fm.fileExists(atPath: final.path) {
                // Same epoch saved again (e.g. a rerun): move the old one aside first, delete it after.
                let old = directory.appendingPathComponent(".\(Self.prefix)\(epoch).old-\(UUID().uuidString)")
                try fm.moveItem(at: final, to: old)
                try fm.moveItem(at: partial, to: final)
                try? fm.removeItem(at: old)
            } else {
                guard rename(partial.path, final.path) == 0 else {
                    throw CheckpointError(path: final.path, "cannot move the finished checkpoint into place (errno \(errno))")
                }
            }
            try prune()
            return final
        } catch {
            try? fm.removeItem(at: partial)
            throw error
        }
    }

    /// The complete checkpoints in `directory`, oldest epoch first.
    public func checkpoints() throws -> [(epoch: Int, url: URL)] {
        guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
        return try Self.listed(in: directory).filter { (try? Self.verify($0.url)) != nil }
    }

    /// Removes the oldest complete checkpoints beyond `limit`, and leftovers of interrupted saves.
    func prune() throws {
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: directory.path)
        where name.hasPrefix(".\(Self.prefix)") && (name.contains(".partial-") || name.contains(".old-")) {
            try? fm.removeItem(at: directory.appendingPathComponent(name))
        }
        let complete = try checkpoints()
        for (_, url) in complete.dropLast(limit) { try fm.removeItem(at: url) }
    }

    static func listed(in directory: URL) throws -> [(epoch: Int, url: URL)] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).compactMap { name in
            guard name.hasPrefix(prefix), let epoch = Int(name.dropFirst(prefix.count)) else { return nil }
            return (epoch, directory.appendingPathComponent(name))
        }.sorted { $0.epoch < $1.epoch }
    }

    /// Checks a checkpoint folder against its manifest; returns its epoch.
    @discardableResult
    public static func verify(_ url: URL) throws -> Int {
        let manifestURL = url.appendingPathComponent(manifestName)
        guard let data = try? Data(contentsOf: manifestURL) else {
            throw CheckpointError(path: url.path, "incomplete checkpoint: \(manifestName) is missing (the save was interrupted)")
        }
        let manifest: Manifest
        do { manifest = try JSONDecoder().decode(Manifest.self, from: data) } catch {
            throw CheckpointError(path: manifestURL.path, "unreadable manifest: \(error)")
        }
        let fm = FileManager.default
        for (name, size) in manifest.files.sorted(by: { $0.key < $1.key }) {
            let path = url.appendingPathComponent(name).path
            guard let attributes = try? fm.attributesOfItem(atPath: path) else {
                throw CheckpointError(path: path, "missing from the checkpoint (listed in \(manifestName))")
            }
            let actual = (attributes[.size] as? NSNumber)?.intValue ?? -1
            guard actual == size else {
                throw CheckpointError(path: path, "has \(actual) bytes, the manifest says \(size): the checkpoint is damaged or truncated")
            }
        }
        return manifest.epoch
    }

    /// TRL's `resume_from`: a `checkpoint_<n>` folder (checked), or the folder holding them (the
    /// latest complete one is taken).
    public static func resolve(_ url: URL) throws -> (epoch: Int, url: URL) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CheckpointError(path: url.path, "resume_from: no such checkpoint folder")
        }
        if url.lastPathComponent.hasPrefix(prefix) {
            return (try verify(url), url)
        }
        let all = try listed(in: url)
        guard !all.isEmpty else {
            throw CheckpointError(path: url.path, "resume_from: no \(prefix)<epoch> folders here")
        }
        for candidate in all.reversed() where (try? verify(candidate.url)) != nil {
            return candidate
        }
        // None is complete: report why the latest is not.
        _ = try verify(all.last!.url)
        throw CheckpointError(path: url.path, "resume_from: no complete checkpoint")
    }
}
