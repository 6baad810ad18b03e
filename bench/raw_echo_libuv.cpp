// raw_echo_libuv — a hand-written libuv echo server: uv_listen, then
// uv_read_start per connection and the bytes written back.
//
// The fast form libuv's own heavy users take (Node's stream writes do the
// same): the allocation callback hands out one read buffer shared by all
// connections, uv_try_write sends the echo at once, and only a partial write
// copies the rest into the connection and queues it with uv_write, pausing
// reading (uv_read_stop) until its callback. SIGTERM/SIGINT stop the loop
// through uv_signal_t handles.
//
// Usage: raw_echo_libuv [--host ADDR] [--port N]
#include "server_common.hpp"

#include <uv.h>

#include <csignal>
#include <vector>

namespace {

struct Connection {
    uv_tcp_t tcp;  // tcp.data points back here
    uv_write_t write_request;
    std::vector<char> pending;
};

char read_buffer[64 * 1024];

void on_closed(uv_handle_t* handle) { delete static_cast<Connection*>(handle->data); }

void close_connection(Connection* connection) {
    uv_close(reinterpret_cast<uv_handle_t*>(&connection->tcp), on_closed);
}

void allocate(uv_handle_t* /*handle*/, std::size_t /*suggested*/, uv_buf_t* buffer) {
    *buffer = uv_buf_init(read_buffer, sizeof read_buffer);
}

void on_read(uv_stream_t* stream, ssize_t size, const uv_buf_t* buffer);

void on_written(uv_write_t* request, int status) {
    auto* connection = static_cast<Connection*>(request->data);
    connection->pending.clear();
    if (status != 0 || uv_read_start(reinterpret_cast<uv_stream_t*>(&connection->tcp), allocate, on_read) != 0)
        close_connection(connection);
}

void on_read(uv_stream_t* stream, ssize_t size, const uv_buf_t* buffer) {
    auto* connection = static_cast<Connection*>(stream->data);
    if (size < 0) {
        close_connection(connection);
        return;
    }
    if (size == 0) return;  // EAGAIN
    uv_buf_t echo = uv_buf_init(buffer->base, static_cast<unsigned>(size));
    const int written = uv_try_write(stream, &echo, 1);
    if (written == size) return;
    if (written < 0 && written != UV_EAGAIN) {
        close_connection(connection);
        return;
    }
    const std::size_t taken = written < 0 ? 0 : static_cast<std::size_t>(written);
    connection->pending.assign(buffer->base + taken, buffer->base + size);
    uv_read_stop(stream);
    echo = uv_buf_init(connection->pending.data(), static_cast<unsigned>(connection->pending.size()));
    connection->write_request.data = connection;
    if (uv_write(&connection->write_request, stream, &echo, 1, on_written) != 0) close_connection(connection);
}

void on_connection(uv_stream_t* server, int status) {
    if (status != 0) return;
    auto* connection = new Connection{};
    uv_tcp_init(server->loop, &connection->tcp);
    connection->tcp.data = connection;
    auto* stream = reinterpret_cast<uv_stream_t*>(&connection->tcp);
    if (uv_accept(server, stream) != 0) {
        close_connection(connection);
        return;
    }
    uv_tcp_nodelay(&connection->tcp, 1);
    uv_read_start(stream, allocate, on_read);
}

void on_stop_signal(uv_signal_t* handle, int /*signo*/) { uv_stop(handle->loop); }

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);
    std::signal(SIGPIPE, SIG_IGN);

    uv_loop_t* loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    if (uv_tcp_open(&server, listen_fd) != 0 ||
        uv_listen(reinterpret_cast<uv_stream_t*>(&server), SOMAXCONN, on_connection) != 0) {
        std::fprintf(stderr, "libuv set-up failed\n");
        return 1;
    }
    uv_signal_t term;
    uv_signal_t interrupt;
    uv_signal_init(loop, &term);
    uv_signal_init(loop, &interrupt);
    uv_signal_start(&term, on_stop_signal, SIGTERM);
    uv_signal_start(&interrupt, on_stop_signal, SIGINT);

    bench::announce_listening(listen_fd);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
