// example_arguments.hpp — the command line every example server shares:
// [--backend NAME] [--host ADDR] [--port N], plus options of its own, and
// how an example reports a bad one. Nothing here needs the tcp component,
// so the TLS examples use it too; server_arguments.hpp adds TcpServer.
#pragma once

#include <anyloop/backends/registry.hpp>

#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

namespace examples {

/// The loop of --backend NAME; empty: the default backend.
[[nodiscard]] inline std::unique_ptr<anyloop::EventLoop> make_loop(const std::string& backend) {
    return backend.empty() ? anyloop::make_loop() : anyloop::make_loop(backend);
}

struct ServerArguments {
    std::string backend;  // empty: the default backend
    std::string host = "127.0.0.1";
    std::string port = "0";  // 0: any free port
    bool host_or_port_given = false;

    /// The --host/--port listener: "host:port", or "[v6]:port".
    [[nodiscard]] std::string address() const { return address(port); }
    /// The --host listener on `listening_port` (the port the kernel chose).
    [[nodiscard]] std::string address(const std::string& listening_port) const {
        return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + listening_port;
    }
    [[nodiscard]] std::unique_ptr<anyloop::EventLoop> make_loop() const { return examples::make_loop(backend); }
};

/// Takes an option of the program's own: returns false when `option` is not
/// one. `value()` fetches the option's value (and throws if there is none).
using ExtraOption = std::function<bool(const std::string& option, const std::function<std::string()>& value)>;

/// Parses the shared options; anything else goes to `extra`. Throws
/// std::invalid_argument naming an unknown option or a missing value.
inline ServerArguments parse_server_arguments(int argc, char** argv, const ExtraOption& extra = {}) {
    ServerArguments arguments;
    for (int i = 1; i < argc; ++i) {
        const std::string option = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument("missing value after " + option);
            return argv[++i];
        };
        if (option == "--backend") {
            arguments.backend = value();
        } else if (option == "--host" || option == "--port") {
            (option == "--host" ? arguments.host : arguments.port) = value();
            arguments.host_or_port_given = true;
        } else if (!extra || !extra(option, value)) {
            throw std::invalid_argument("unknown option " + option);
        }
    }
    return arguments;
}

/// Reports what went wrong (a bad option, an address in use) and the usage;
/// returns the exit status 2.
inline int fail(const std::string& program, const std::exception& error,
                const std::string& usage = "[--backend NAME] [--host ADDR] [--port N]") {
    std::cerr << program << ": " << error.what() << "\nusage: " << program << " " << usage << "\n";
    return 2;
}

}  // namespace examples
