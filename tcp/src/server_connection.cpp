// Connection: one client of a TcpServer — the PROXY header, records through
// the filters, the idle timer, and the way out (shutdown, close, errors).
#include "server_core.hpp"

#include <anyloop/tcp/proxy_protocol.hpp>

#include <cstring>
#include <utility>

namespace anyloop::tcp {

using detail::ServerCore;

Connection::Connection(ServerCore& core, std::uint64_t serial)
    : core_(core),
      idle_timed_(core.shared().options.idle_timeout > Duration::zero()),
      serial_(serial),
      input_filter_(core.shared().options.input_filter->clone()),
      output_filter_(core.shared().options.output_filter->clone()) {
    input_transparent_ = input_filter_->transparent();
    output_transparent_ = output_filter_->transparent();
}

Connection::~Connection() = default;

void Connection::stamp_activity() noexcept { last_activity_ = core_.loop().now(); }

void Connection::set_remote(const sockaddr_storage& address, socklen_t length) {
    remote_ = address;
    remote_length_ = length;
    const auto* generic = reinterpret_cast<const sockaddr*>(&remote_);
    remote_address_ = address_text(generic, length);
    remote_port_ = address_port(generic, length);
}

// Installs the Handle's callbacks; throws if the loop cannot watch the
// descriptor. No user callback runs here.
void Connection::setup(bool proxy_protocol) {
    handle_->on_error([this](Handle&, std::error_code error, const std::string& message, bool fatal) {
        on_error(error, message, fatal);
    });
    handle_->on_eof([this](Handle&) {
        if (state_ == State::header) on_error(std::make_error_code(std::errc::broken_pipe),
                                              "end of file before the PROXY header", true);
        else shutdown();  // answer what was asked, then close
    });
    const ServerOptions& options = core_.shared().options;
    // Each completed write would call it: only when someone listens.
    if (core_.shared().on_flushed || options.idle_timeout > Duration::zero())
        handle_->on_drain([this](Handle&) { on_drain(); });

    const Duration first_wait = proxy_protocol ? options.proxy_header_timeout : options.idle_timeout;
    touch();
    arm_timer(first_wait);

    if (proxy_protocol) {
        handle_->push_read(Reader::custom([this](Handle&, ReadBuffer& input) { return read_proxy_header(input); }));
        return;
    }
    if (tls_ctx_) handle_->starttls(TlsMode::accept, tls_ctx_);
    start_input();
}

void Connection::announce() {
    state_ = State::open;
    announced_ = true;
    core_.announced(*this);
    Logger& logger = core_.logger();
    if (logger.enabled(LogLevel::info))
        logger.log(LogLevel::info, "connection " + std::to_string(serial_) + " from " + remote_address_ + " port " +
                                       std::to_string(remote_port_) + " on " + listener_address_);
    const auto keep = shared_from_this();
    if (core_.shared().on_connected) core_.shared().on_connected(*this);
}

// Called with the input whenever it grew; true once the header is done
// (or the connection is).
bool Connection::read_proxy_header(ReadBuffer& input) {
    const ProxyParseResult result = parse_proxy_header(input.view());
    if (result.status == ProxyParseResult::Status::need_more) return false;
    const auto keep = shared_from_this();
    if (result.status == ProxyParseResult::Status::error) {
        core_.logger().log(LogLevel::notice, "closing " + remote_address_ + " port " + std::to_string(remote_port_) +
                                                 " on " + listener_address_ + ": bad PROXY header: " + result.message);
        core_.shared().dropped.fetch_add(1, std::memory_order_relaxed);
        finish(false);
        return true;
    }
    input.consume(result.consumed);
    // LOCAL (a balancer's health check) keeps the balancer's own address.
    if (!result.header.local && result.header.source_length > 0)
        set_remote(result.header.source, result.header.source_length);
    if (!core_.allowed(remote_sockaddr(), remote_length_, listener_address_, &remote_host_)) {
        finish(false);
        return true;
    }
    // The bytes after the header are the TLS handshake's, if any.
    if (tls_ctx_) handle_->starttls(TlsMode::accept, tls_ctx_);
    // Input after the header reaches on_read once this reader has left.
    start_input();
    arm_timer(core_.shared().options.idle_timeout);
    touch();
    announce();
    return true;
}

// From here on the input goes to on_input: as it comes (the transparent
// filter: the bytes are the record), or cut into records by the filter.
void Connection::start_input() {
    if (!input_transparent_) {
        handle_->on_read([this](Handle&) { process_input(); });
        return;
    }
    // Nothing of this connection is touched after on_input, which may end
    // it (the input belongs to the Handle, which outlives its callbacks).
    handle_->on_read([this, &input = handle_->read_buffer()](Handle&) {
        if (state_ != State::open) return;
        touch();
        if (const auto& on_input = core_.shared().on_input) on_input(*this, input.view());
        input.clear();
    });
}

void Connection::process_input() {
    if (state_ != State::open) return;
    const auto& on_input = core_.shared().on_input;
    ReadBuffer& input = handle_->read_buffer();
    const auto keep = shared_from_this();
    while (state_ == State::open && !input.empty()) {
        const FilterResult result = input_filter_->next(input.view());
        if (result.status == FilterResult::Status::error) {
            // Answers to the records before the bad one still go out.
            report(result.error, "connection " + std::to_string(serial_) + " from " + remote_address_ + ": " +
                                     result.message);
            shutdown();
            return;
        }
        // consume() leaves the bytes in place, so the record stays valid.
        input.consume(result.consumed);
        if (result.status == FilterResult::Status::need_more) return;
        touch();
        if (on_input) on_input(*this, result.record);
        if (result.consumed == 0) return;  // a filter that takes nothing would spin
    }
}

// send() when the output filter encodes, or the connection is closed.
void Connection::send_through_filter(std::string_view record) {
    if (state_ == State::closed || !handle_) return;
    encoded_.clear();
    output_filter_->put(record, encoded_);
    handle_->push_write(std::string_view(encoded_));
}

void Connection::shutdown() {
    if (state_ == State::header) {
        finish(false);
        return;
    }
    if (state_ != State::open) return;
    state_ = State::closing;
    handle_->on_drain([this](Handle&) { on_drain(); });
    handle_->on_read({});
    handle_->stop_read();
    arm_timer(core_.shared().options.shutdown_timeout);
    if (handle_->write_queue_size() == 0) finish(true);
}

void Connection::close() { finish(true); }

void Connection::on_error(std::error_code error, const std::string& message, bool fatal) {
    if (state_ == State::closed) return;
    const auto keep = shared_from_this();
    if (state_ == State::header) {
        core_.logger().log(LogLevel::notice, "closing " + remote_address_ + " port " + std::to_string(remote_port_) +
                                                 " on " + listener_address_ + " before its PROXY header: " + message);
        core_.shared().dropped.fetch_add(1, std::memory_order_relaxed);
        finish(false);
        return;
    }
    report(error, message);
    if (fatal) finish(true);
}

void Connection::report(std::error_code error, const std::string& message) {
    if (core_.logger().enabled(LogLevel::info))
        core_.logger().log(LogLevel::info, "connection " + std::to_string(serial_) + ": " + message);
    if (core_.shared().on_error) core_.shared().on_error(*this, error, message);
}

void Connection::on_drain() {
    touch();
    if (state_ == State::open && core_.shared().on_flushed) core_.shared().on_flushed(*this);
    if (state_ == State::closing && handle_->write_queue_size() == 0) finish(true);
}

// One timer serves three waits: the PROXY header, idleness, and the flush
// after shutdown(). Activity only records the time; the timer re-arms itself
// for what is left (libev's idea for timeouts).
void Connection::on_idle_timer() {
    const ServerOptions& options = core_.shared().options;
    if (state_ == State::header) {
        on_error(std::make_error_code(std::errc::timed_out), "no PROXY header within the time allowed", true);
        return;
    }
    if (state_ == State::closing) {
        core_.logger().log(LogLevel::info, "connection " + std::to_string(serial_) + ": output not flushed in time");
        finish(true);
        return;
    }
    // Output that is still moving out counts as activity too.
    const std::size_t queued = handle_->write_queue_size();
    if (queued != 0 && queued != queued_at_check_) touch();
    queued_at_check_ = queued;
    const Duration idle = handle_->loop().now() - last_activity_;
    if (idle < options.idle_timeout) {
        arm_timer(options.idle_timeout - idle);
        return;
    }
    on_error(std::make_error_code(std::errc::timed_out),
             "connection " + std::to_string(serial_) + " from " + remote_address_ + " idle for " +
                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(idle).count()) + " ms",
             true);
}

void Connection::arm_timer(Duration after) {
    if (after <= Duration::zero()) idle_timer_.reset();
    else if (idle_timer_) idle_timer_.start(after);
    else idle_timer_ = handle_->loop().timer(after, [this] { on_idle_timer(); });
}

void Connection::finish(bool report) {
    if (state_ == State::closed) return;
    state_ = State::closed;
    idle_timer_.reset();
    if (handle_) handle_->close();
    core_.closed(*this, report && announced_);
}

}  // namespace anyloop::tcp
