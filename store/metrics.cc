#include "store/metrics.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace plasmon {

void LatencyHistogram::Add(int64_t micros) {
  if (micros < 0) micros = 0;
  const double s = static_cast<double>(micros) / 1e6;
  size_t i = 0;
  while (i < kBounds.size() && s > kBounds[i]) i++;
  buckets_[i]++;
  count_++;
  sum_us_ += static_cast<uint64_t>(micros);
}

namespace {

class Writer {
 public:
  // One family: its HELP and TYPE lines.
  void Family(const char* name, const char* type, const char* help) {
    name_ = name;
    Printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  }
  void Sample(uint64_t v, const std::string& labels = "") { Sample(name_, labels, std::to_string(v)); }
  void Sample(const std::string& name, const std::string& labels, const std::string& value) {
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += " " + value + "\n";
  }
  void Histogram(const LatencyHistogram& h) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i < LatencyHistogram::kBounds.size(); i++) {
      cumulative += h.buckets()[i];
      char le[32];
      std::snprintf(le, sizeof(le), "le=\"%g\"", LatencyHistogram::kBounds[i]);
      Sample(name_ + "_bucket", le, std::to_string(cumulative));
    }
    Sample(name_ + "_bucket", "le=\"+Inf\"", std::to_string(h.count()));
    char sum[32];
    std::snprintf(sum, sizeof(sum), "%.6f", h.sum_seconds());
    Sample(name_ + "_sum", "", sum);
    Sample(name_ + "_count", "", std::to_string(h.count()));
  }
  std::string Take() { return std::move(out_); }

 private:
  template <typename... Args>
  void Printf(const char* fmt, Args... args) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), fmt, args...);
    out_ += buf;
  }
  std::string name_;
  std::string out_;
};

}  // namespace

std::string FormatPrometheus(const MetricsSnapshot& m) {
  const StoreStats& s = m.stats;
  Writer w;
  w.Family("plasmon_capacity_bytes", "gauge", "Usable bytes of the arena.");
  w.Sample(s.capacity);
  w.Family("plasmon_used_bytes", "gauge", "Bytes allocated to objects (after alignment).");
  w.Sample(s.used);
  w.Family("plasmon_pinned_bytes", "gauge",
           "Of the used bytes, those that cannot be evicted: referenced by a client or being "
           "created.");
  w.Sample(m.pinned_bytes);
  w.Family("plasmon_objects", "gauge", "Objects in the store, by state.");
  w.Sample(s.sealed_count, "state=\"sealed\"");
  w.Sample(s.object_count - s.sealed_count, "state=\"created\"");
  w.Family("plasmon_creates_total", "counter", "Objects created (Create, CreateAndSeal, fetches).");
  w.Sample(m.creates);
  w.Family("plasmon_seals_total", "counter", "Objects sealed.");
  w.Sample(m.seals);
  w.Family("plasmon_gets_total", "counter",
           "Object IDs asked for by Gets, by path (socket: a request to the store; shm: got "
           "from the shared index with no round trip, as the clients count them).");
  w.Sample(m.gets_socket, "path=\"socket\"");
  w.Sample(m.gets_shm, "path=\"shm\"");
  w.Family("plasmon_deletes_total", "counter", "Objects deleted (at once or at their last release).");
  w.Sample(m.deletes);
  w.Family("plasmon_deleted_bytes_total", "counter", "Bytes freed by deletes.");
  w.Sample(m.deleted_bytes);
  w.Family("plasmon_evictions_total", "counter", "Objects evicted to make room or on request.");
  w.Sample(s.evictions);
  w.Family("plasmon_evicted_bytes_total", "counter", "Bytes freed by evictions.");
  w.Sample(s.evicted_bytes);
  w.Family("plasmon_clients", "gauge", "Connected clients, subscribers included.");
  w.Sample(s.clients);
  w.Family("plasmon_fetches_total", "counter",
           "Pulls of objects from other stores, by transport and result (a failed pull is "
           "retried from the next holder or transport).");
  w.Sample(m.pulls_ok_tcp, "transport=\"tcp\",result=\"ok\"");
  w.Sample(m.pulls_failed_tcp, "transport=\"tcp\",result=\"failed\"");
  w.Sample(m.pulls_ok_verbs, "transport=\"verbs\",result=\"ok\"");
  w.Sample(m.pulls_failed_verbs, "transport=\"verbs\",result=\"failed\"");
  w.Family("plasmon_fetched_bytes_total", "counter", "Bytes of objects pulled from other stores.");
  w.Sample(s.fetched_bytes);
  w.Family("plasmon_fetch_duration_seconds", "histogram",
           "Time from a Fetch's start to the pulled object's seal here.");
  w.Histogram(m.fetch_latency);
  w.Family("plasmon_loop_polls_total", "counter",
           "Rounds of the store's loop that polled (--busy-poll-us) while a small pull's or a "
           "lookup's answer was due: answered (it was there; a wake-up saved) or empty (CPU spent).");
  w.Sample(m.polls_answered, "result=\"answered\"");
  w.Sample(m.polls_empty, "result=\"empty\"");
  if (m.has_directory) {
    w.Family("plasmon_directory_connected", "gauge",
             "1 if the directory (Redis) is connected and has every location of this store.");
    w.Sample(m.directory_connected ? 1 : 0);
    w.Family("plasmon_directory_publishes_queued", "gauge",
             "Location updates waiting to be written to Redis.");
    w.Sample(m.directory_queued);
    w.Family("plasmon_directory_publish_failures_total", "counter",
             "Location updates whose write to Redis failed (all are written again after a reconnect).");
    w.Sample(m.directory_failed);
    w.Family("plasmon_directory_lookups_total", "counter",
             "Fetches' lookups in Redis: by one HSCAN of the object's record, the holders' node "
             "records cached (--node-cache-ms), or by the lookup script.");
    w.Sample(m.lookups_scanned, "how=\"hscan\"");
    w.Sample(m.lookups_scripted, "how=\"script\"");
  }
  if (!m.transports.empty()) {
    w.Family("plasmon_transport_connections", "gauge",
             "Connections a transport holds, by role (serving: peers pulling from this store, "
             "handshaking: peers not yet authenticated, outgoing: to holders).");
    for (const MetricsSnapshot::Transport& t : m.transports) {
      const std::string l = "transport=\"" + t.name + "\",role=";
      w.Sample(t.serving, l + "\"serving\"");
      w.Sample(t.handshaking, l + "\"handshaking\"");
      w.Sample(t.outgoing, l + "\"outgoing\"");
    }
  }
  return w.Take();
}

void SnapshotSlot::Publish(std::shared_ptr<const MetricsSnapshot> s) {
  {
    std::lock_guard<std::mutex> l(mu_);
    last_ = std::move(s);
    published_++;
    requested_ = false;
  }
  cv_.notify_all();
}

std::shared_ptr<const MetricsSnapshot> SnapshotSlot::Fresh(int wait_ms) {
  std::unique_lock<std::mutex> l(mu_);
  // The next snapshot published is fresh: if one is asked for already, the
  // loop has not finished it, so it follows every request the loop
  // answered before this scrape began.
  const uint64_t want = published_ + 1;
  if (!requested_) {
    requested_ = true;
    l.unlock();
    request_();
    l.lock();
  }
  cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return published_ >= want; });
  return last_;
}

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& addr_port,
                                                            SnapshotSlot* slot) {
  // ADDR:PORT or [V6]:PORT.
  const size_t colon = addr_port.rfind(':');
  std::string host = colon == std::string::npos ? "" : addr_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string digits = colon == std::string::npos ? "" : addr_port.substr(colon + 1);
  char* end = nullptr;
  const unsigned long port = std::strtoul(digits.c_str(), &end, 10);
  if (host.empty() || digits.empty() || *end != '\0' || port > 65535)
    return Status::InvalidArgument("--metrics wants ADDR:PORT (e.g. 127.0.0.1:9464), not '" +
                                   addr_port + "'");
  auto impl = std::make_unique<Impl>();
  httplib::Server& svr = impl->server;
  // Two threads: scrapes are rare; a scraper that holds its connection open
  // without reading keeps one for at most the timeouts below.
  svr.new_task_queue = [] { return new httplib::ThreadPool(2); };
  svr.set_read_timeout(5, 0);
  svr.set_write_timeout(5, 0);
  svr.set_keep_alive_timeout(5);
  svr.Get("/metrics", [slot](const httplib::Request&, httplib::Response& res) {
    std::shared_ptr<const MetricsSnapshot> m = slot->Fresh(1000);
    if (m == nullptr) {
      res.status = 503;
      res.set_content("the store has not answered yet\n", "text/plain");
      return;
    }
    res.set_content(FormatPrometheus(*m), "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("plasmon-store: metrics at /metrics\n", "text/plain");
  });
  int bound = static_cast<int>(port);
  if (port == 0) {
    bound = svr.bind_to_any_port(host);
    if (bound < 0) return Status::IOError("--metrics: cannot bind " + addr_port);
  } else if (!svr.bind_to_port(host, bound)) {
    return Status::IOError("--metrics: cannot bind " + addr_port +
                           " (in use, or not an address of this host)");
  }
  impl->thread = std::thread([s = &impl->server] { s->listen_after_bind(); });
  spdlog::info("metrics at http://{}:{}/metrics", host, bound);
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl), bound));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace plasmon
