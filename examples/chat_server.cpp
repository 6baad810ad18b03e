// chat_server — every line a client sends goes to all the other clients,
// prefixed with the sender's address.
//
//   chat_server [--backend NAME] [--host ADDR] [--port N]
//
// Prints "listening on HOST:PORT" first; exits 0 on SIGTERM or SIGINT.
#include "server_arguments.hpp"

#include <iostream>
#include <map>

using namespace anyloop::tcp;

int main(int argc, char** argv) try {
    const examples::ServerArguments arguments = examples::parse_server_arguments(argc, argv);
    auto loop = arguments.make_loop();
    TcpServer server(*loop, examples::server_options(arguments));

    // The room, by serial number. A Connection stays valid until its
    // disconnected callback has returned, which is when it leaves the room.
    std::map<std::uint64_t, Connection*> room;
    const auto broadcast = [&room](std::uint64_t from, const std::string& text) {
        for (const auto& [serial, member] : room)
            if (serial != from) member->send(text);
    };
    const auto name = [](const Connection& connection) {
        return connection.remote_address() + ":" + std::to_string(connection.remote_port());
    };
    server.on_connected([&](Connection& connection) {
        broadcast(connection.serial(), "* " + name(connection) + " joined");
        room.emplace(connection.serial(), &connection);
    });
    server.on_input([&](Connection& connection, std::string_view line) {
        broadcast(connection.serial(), name(connection) + ": " + std::string(line));
    });
    server.on_disconnected([&](Connection& connection) {
        room.erase(connection.serial());
        broadcast(connection.serial(), "* " + name(connection) + " left");
    });
    return examples::serve(server, *loop);
} catch (const std::exception& error) {
    return examples::fail("chat_server", error);
}
