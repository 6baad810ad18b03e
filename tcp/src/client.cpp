// TcpClient: tcp_connect, a Handle, filters both ways, and timed retries.
#include <anyloop/tcp/client.hpp>

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace anyloop::tcp {

namespace {

template <typename Function>
std::shared_ptr<const Function> slot_of(Function callback) {
    return callback ? std::make_shared<const Function>(std::move(callback)) : nullptr;
}

std::string milliseconds_text(Duration delay) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(delay).count()) + " ms";
}

}  // namespace

template <typename Function, typename... Args>
bool TcpClient::notify(const std::shared_ptr<const Function>& slot, Args&&... args) {
    const std::shared_ptr<const Function> running = slot;
    if (!running) return true;
    const std::weak_ptr<char> alive = alive_;
    (*running)(*this, std::forward<Args>(args)...);
    return !alive.expired();
}

TcpClient::TcpClient(EventLoop& loop, TcpClientOptions options)
    : loop_(loop),
      options_(std::move(options)),
      input_prototype_(std::make_unique<LineFilter>()),
      output_filter_(std::make_unique<LineFilter>()) {}

TcpClient::~TcpClient() {
    close();
}

void TcpClient::on_connected(Callback callback) {
    on_connected_ = slot_of(std::move(callback));
}
void TcpClient::on_input(InputCallback callback) {
    on_input_ = slot_of(std::move(callback));
}
void TcpClient::on_disconnected(Callback callback) {
    on_disconnected_ = slot_of(std::move(callback));
}
void TcpClient::on_error(ErrorCallback callback) {
    on_error_ = slot_of(std::move(callback));
}
void TcpClient::on_flushed(Callback callback) {
    on_flushed_ = slot_of(std::move(callback));
}

void TcpClient::set_filter(std::unique_ptr<Filter> input, std::unique_ptr<Filter> output) {
    if (!input) throw std::invalid_argument("TcpClient::set_filter: the input filter is null");
    output_filter_ = output ? std::move(output) : input->clone();
    input_prototype_ = std::move(input);
}

// ---- connecting ---------------------------------------------------------------

void TcpClient::connect(std::string_view host, std::uint16_t port) {
    close();
    host_ = host;
    port_ = port;
    failed_attempts_ = 0;
    start_attempt();
}

void TcpClient::start_attempt() {
    state_ = State::connecting;
    request_ = tcp_connect(loop_, host_, port_, options_.connect,
                           [this](std::unique_ptr<Handle> handle, std::error_code error, const std::string& message) {
                               on_connect_result(std::move(handle), error, message);
                           });
}

void TcpClient::on_connect_result(std::unique_ptr<Handle> handle, std::error_code error, const std::string& message) {
    if (handle) {
        attach(std::move(handle));
        return;
    }
    ++failed_attempts_;
    Duration delay{};
    std::string text = message;
    if (schedule_retry(delay)) {
        text += "; retrying in " + milliseconds_text(delay);
    } else {
        pending_.clear();  // no connection is coming for it
        if (options_.reconnect.enabled)
            text += "; giving up after " + std::to_string(failed_attempts_) + " failed attempts";
    }
    notify(on_error_, error, text);
}

bool TcpClient::schedule_retry(Duration& delay) {
    const ReconnectOptions& reconnect = options_.reconnect;
    if (!reconnect.enabled || (reconnect.max_attempts != 0 && failed_attempts_ >= reconnect.max_attempts)) {
        state_ = State::idle;
        return false;
    }
    // initial_delay after a lost connection or a first failure, doubled
    // for each further failure in a row.
    delay = reconnect.initial_delay;
    for (unsigned failure = 1; failure < failed_attempts_ && delay < reconnect.max_delay; ++failure) delay *= 2;
    delay = std::min(delay, reconnect.max_delay);
    state_ = State::waiting;
    timer_ = loop_.timer(delay, [this] { start_attempt(); });
    return true;
}

void TcpClient::attach(std::unique_ptr<Handle> handle) {
    handle_ = std::move(handle);
    failed_attempts_ = 0;
    state_ = State::connected;
    input_filter_ = input_prototype_->clone();
    handle_->on_read([this](Handle&) { dispatch_input(); });
    handle_->on_eof([this](Handle&) { lose_connection({}, {}); });
    handle_->on_error([this](Handle&, std::error_code error, const std::string& message, bool fatal) {
        if (fatal)
            lose_connection(error, message);
        else
            notify(on_error_, error, message);
    });
    handle_->on_drain([this](Handle&) {
        if (state_ == State::shutting_down)
            finish_shutdown();
        else
            notify(on_flushed_);
    });
    Handle* const connection = handle_.get();
    if (!notify(on_connected_)) return;
    // Records sent while connecting and inside on_connected go out together,
    // in order, unless on_connected closed or replaced the connection.
    if (handle_.get() == connection) write_pending();
}

bool TcpClient::write_pending() {
    if (pending_.empty()) return true;
    const std::weak_ptr<char> alive = alive_;
    Handle* const connection = handle_.get();
    connection->push_write(std::exchange(pending_, {}));
    // A write that failed at once has dropped the connection already.
    return !alive.expired() && handle_.get() == connection;
}

// ---- input --------------------------------------------------------------------

void TcpClient::dispatch_input() {
    const std::weak_ptr<char> alive = alive_;
    Handle* const handle = handle_.get();
    while (state_ == State::connected && handle_.get() == handle) {
        ReadBuffer& input = handle->read_buffer();
        const FilterResult result = input_filter_->next(input.view());
        if (result.status == FilterResult::Status::need_more) return;
        if (result.status == FilterResult::Status::error) {
            lose_connection(result.error, "input from " + where() + ": " + result.message);
            return;
        }
        if (!notify(on_input_, result.record)) return;
        // The callback may have closed, shut down or replaced the connection.
        if (alive.expired() || handle_.get() != handle) return;
        input.consume(result.consumed);
    }
}

// ---- closing ------------------------------------------------------------------

void TcpClient::lose_connection(std::error_code error, const std::string& message) {
    const bool shutting_down = state_ == State::shutting_down;
    drop_connection();
    // The retry is timed before the callbacks so that they can cancel it
    // (close, shutdown) or replace it (connect).
    Duration delay{};
    if (shutting_down || !schedule_retry(delay)) state_ = State::idle;
    if (error && !notify(on_error_, error, message)) return;
    notify(on_disconnected_);
}

void TcpClient::shutdown() {
    switch (state_) {
        case State::connected:
            if (!write_pending()) return;
            state_ = State::shutting_down;
            handle_->stop_read();
            // Otherwise the Handle's on_drain finishes the shutdown.
            if (handle_->write_queue_size() == 0) timer_ = loop_.timer(Duration::zero(), [this] { finish_shutdown(); });
            return;
        case State::connecting:
        case State::waiting:
            close();
            return;
        case State::idle:
        case State::shutting_down:
            return;
    }
}

void TcpClient::finish_shutdown() {
    drop_connection();
    state_ = State::idle;
    notify(on_disconnected_);
}

void TcpClient::close() noexcept {
    drop_connection();
    pending_.clear();
    state_ = State::idle;
}

void TcpClient::drop_connection() noexcept {
    timer_.stop();
    request_.cancel();
    handle_.reset();
}

bool TcpClient::send(std::string_view record) {
    switch (state_) {
        case State::connected:
            if (!pending_.empty()) {  // inside on_connected: after what waits
                output_filter_->put(record, pending_);
                return true;
            }
            wire_.clear();
            output_filter_->put(record, wire_);
            handle_->push_write(std::string_view(wire_));
            return true;
        case State::connecting:
        case State::waiting:
            output_filter_->put(record, pending_);
            return true;
        case State::idle:
        case State::shutting_down:
            return false;
    }
    return false;
}

std::string TcpClient::where() const {
    const bool ipv6 = host_.find(':') != std::string::npos;
    return (ipv6 ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
}

}  // namespace anyloop::tcp
