// The remote cache client (docs/scale.md, "Remote cache"). HTTP through
// libcurl, one easy handle per request (requests come from the build's worker
// threads at once); SHA-256 through OpenSSL's libcrypto.
//
// The record stored under <url>/ac/<ac_key(node key)>, text, one item a line:
//   qforge-remote-entry 1
//   node <node key>
//   object <sha256 hex> <size> <XXH3-128 hex> <suffix or '-'>   (one per object)
//   <the local record, keys/<node key>, verbatim: "qforge-cache-entry 2" ...>
// Each object is at <url>/cas/<sha256 hex>.
#include "qforge/remote_cache.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <sstream>
#include <vector>

#include "qforge/atomic_file.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {

namespace {

constexpr const char* kRemoteHeader = "qforge-remote-entry 1";
constexpr uint64_t kMaxRecordBytes = 16u << 20;  // a record is a few lines; refuse a huge body

std::once_flag g_curl_once;

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1)
      throw Error("OpenSSL: cannot start SHA-256");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* p, size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md, &len);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
      s += digits[md[i] >> 4];
      s += digits[md[i] & 15];
    }
    return s;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string sha256_string(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return h.hex();
}

// The sha256 of a file, streamed.
std::string sha256_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) h.update(buf.data(), n);
  const bool bad = std::ferror(f) != 0;
  std::fclose(f);
  if (bad) throw Error(path + ": read failed");
  return h.hex();
}

bool is_hex(const std::string& s, size_t len) {
  if (s.size() != len) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string human(uint64_t b) {
  char buf[32];
  if (b >= (1u << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  else
    std::snprintf(buf, sizeof buf, "%llu bytes", static_cast<unsigned long long>(b));
  return buf;
}

struct ObjectLine {
  std::string sha256;
  uint64_t size = 0;
  std::string xxh3;
  std::string suffix;
};

}  // namespace

// One HTTP request on its own easy handle.
struct RemoteCache::Transfer {
  CURL* h = nullptr;
  curl_slist* headers = nullptr;
  char err[CURL_ERROR_SIZE] = {0};
  CURLcode code = CURLE_OK;
  long status = 0;

  explicit Transfer(const RemoteCache& rc, const std::string& url) {
    h = curl_easy_init();
    if (!h) throw Error("libcurl: cannot create a handle");
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // threads: no SIGALRM for timeouts
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, rc.cfg_.connect_timeout_s);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, rc.cfg_.stall_timeout_s);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "qforge/" QFORGE_VERSION);
    if (!rc.cfg_.token.empty()) {
      const std::string auth = "Authorization: Bearer " + rc.cfg_.token;
      headers = curl_slist_append(headers, auth.c_str());
    }
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip on PUT
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  }
  ~Transfer() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
  }
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  void perform() {
    code = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  }
  // What went wrong with the connection ("" when the request got an answer).
  std::string transport_error() const {
    if (code == CURLE_OK) return {};
    return err[0] ? std::string(err) : std::string(curl_easy_strerror(code));
  }
};

RemoteCache::RemoteCache(RemoteCacheConfig cfg) : cfg_(std::move(cfg)) {
  base_ = cfg_.url;
  while (!base_.empty() && base_.back() == '/') base_.pop_back();
  // Hide user information (user:password@) in messages, this one included.
  const size_t scheme = base_.find("://");
  const size_t host = scheme == std::string::npos ? 0 : scheme + 3;
  shown_ = base_;
  const size_t slash = shown_.find('/', host);
  const size_t at = shown_.rfind('@', slash == std::string::npos ? shown_.size() : slash);
  if (at != std::string::npos && at >= host) shown_ = shown_.substr(0, host) + shown_.substr(at + 1);
  const std::string proto = scheme == std::string::npos ? std::string() : base_.substr(0, scheme);
  if ((proto != "http" && proto != "https") || base_.size() <= host)
    throw Error("remote cache URL '" + shown_ +
                "' is not an http:// or https:// URL (for example http://cache.example:8080)");
  std::call_once(g_curl_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string RemoteCache::ac_key(const std::string& node_key) {
  return sha256_string(std::string(kRemoteHeader) + "\n" + node_key);
}

namespace {
size_t append_capped(char* p, size_t size, size_t n, void* userdata) {
  auto* out = static_cast<std::string*>(userdata);
  const size_t len = size * n;
  if (out->size() + len > kMaxRecordBytes) return 0;  // abort: not a record
  out->append(p, len);
  return len;
}

struct Download {
  AtomicFile* file = nullptr;
  Sha256 sha;
  Hasher xxh;
  uint64_t got = 0, expected = 0;
  bool too_long = false;
};

size_t write_object(char* p, size_t size, size_t n, void* userdata) {
  auto* d = static_cast<Download*>(userdata);
  const size_t len = size * n;
  if (d->got + len > d->expected) {
    d->too_long = true;
    return 0;
  }
  try {
    d->file->write(p, len);
  } catch (const std::exception&) {
    return 0;
  }
  d->sha.update(p, len);
  d->xxh.raw(p, len);
  d->got += len;
  return len;
}

size_t discard_body(char*, size_t size, size_t n, void*) { return size * n; }

size_t read_file(char* p, size_t size, size_t n, void* userdata) {
  return std::fread(p, size, n, static_cast<std::FILE*>(userdata));
}
}  // namespace

RemoteCache::Result RemoteCache::has(const std::string& key) {
  Result r;
  const std::string url = base_ + "/ac/" + ac_key(key);
  Transfer t(*this, url);
  curl_easy_setopt(t.h, CURLOPT_NOBODY, 1L);
  t.perform();
  if (std::string e = t.transport_error(); !e.empty()) {
    r.outcome = Outcome::Down;
    r.message = "remote cache " + shown_ + ": " + e;
  } else if (t.status == 200) {
    r.outcome = Outcome::Hit;
  } else if (t.status == 404) {
    r.outcome = Outcome::Miss;
  } else {
    r.outcome = Outcome::Down;
    r.message =
        "remote cache " + shown_ + ": HEAD /ac/" + ac_key(key) + " answered HTTP " + std::to_string(t.status);
  }
  return r;
}

namespace {
// A failed answer as a Result: 404 a miss, anything else the server's failure.
std::string http_failure(const std::string& shown, const std::string& what, long status) {
  std::string m = "remote cache " + shown + ": " + what + " answered HTTP " + std::to_string(status);
  if (status == 401 || status == 403)
    m += " (refused: set the bearer token in QFORGE_REMOTE_CACHE_TOKEN, or in the variable [build] "
         "remote_cache_token_env names)";
  return m;
}
}  // namespace

RemoteCache::Result RemoteCache::fetch(const std::string& key, Cache& local) {
  Result r;
  const std::string ak = ac_key(key);
  const std::string where = shown_ + "/ac/" + ak + " (node " + key.substr(0, 12) + ")";
  std::string body;
  {
    Transfer t(*this, base_ + "/ac/" + ak);
    curl_easy_setopt(t.h, CURLOPT_WRITEFUNCTION, append_capped);
    curl_easy_setopt(t.h, CURLOPT_WRITEDATA, &body);
    t.perform();
    if (t.code == CURLE_WRITE_ERROR) {
      r.outcome = Outcome::Corrupt;
      r.message =
          "remote cache record " + where + " is larger than " + human(kMaxRecordBytes) + "; ignored it";
      return r;
    }
    if (std::string e = t.transport_error(); !e.empty()) {
      r.outcome = Outcome::Down;
      r.message = "remote cache " + shown_ + ": GET /ac/" + ak + ": " + e;
      return r;
    }
    if (t.status == 404) return r;  // a miss
    if (t.status != 200) {
      r.outcome = Outcome::Down;
      r.message = http_failure(shown_, "GET /ac/" + ak, t.status);
      return r;
    }
  }
  // Parse the record: its header, the node it is for, its objects, the local record.
  auto corrupt = [&](const std::string& why) {
    r.outcome = Outcome::Corrupt;
    r.message = "remote cache record " + where + " is not usable (" + why + "); ignored it";
    return r;
  };
  std::istringstream in(body);
  std::string line;
  if (!std::getline(in, line) || line != kRemoteHeader)
    return corrupt("its first line is '" + line.substr(0, 40) + "', not '" + kRemoteHeader + "'");
  if (!std::getline(in, line) || line != "node " + key) return corrupt("it is the record of another node");
  std::vector<ObjectLine> objects;
  std::string rest;
  while (std::getline(in, line)) {
    if (line == Cache::entry_header()) {
      rest = line + "\n";
      std::stringstream tail;
      tail << in.rdbuf();
      rest += tail.str();
      break;
    }
    std::istringstream ls(line);
    std::string kind;
    ObjectLine o;
    ls >> kind >> o.sha256 >> o.size >> o.xxh3 >> o.suffix;
    if (kind != "object" || !ls || !is_hex(o.sha256, 64) || !is_hex(o.xxh3, 32))
      return corrupt("bad line '" + line.substr(0, 60) + "'");
    if (o.suffix == "-") o.suffix.clear();
    objects.push_back(o);
  }
  std::optional<CacheEntry> entry;
  std::string why_not;
  try {
    entry = Cache::parse_entry(rest, &why_not);
  } catch (const std::exception& e) {
    return corrupt(e.what());
  }
  if (!entry) return corrupt(rest.empty() ? "it holds no local record" : why_not);
  if (entry->files.size() != objects.size()) return corrupt("its objects and its local record disagree");
  for (size_t k = 0; k < objects.size(); ++k) {
    const auto& f = entry->files[k];
    if (f.digest.hex() != objects[k].xxh3 || f.size != objects[k].size || f.suffix != objects[k].suffix)
      return corrupt("its objects and its local record disagree");
  }
  // Download what the local cache lacks, each verified before it is renamed into place.
  for (size_t k = 0; k < objects.size(); ++k) {
    const ObjectLine& o = objects[k];
    const std::string dest = local.object_path(entry->files[k].digest);
    std::error_code ec;
    if (fs::exists(dest, ec)) continue;  // the local read verifies it
    fs::create_directories(fs::path(dest).parent_path(), ec);
    const std::string url = base_ + "/cas/" + o.sha256;
    const std::string obj = shown_ + "/cas/" + o.sha256 + " (an object of node " + key.substr(0, 12) + ")";
    AtomicFile file(dest);
    Download d;
    d.file = &file;
    d.expected = o.size;
    Transfer t(*this, url);
    curl_easy_setopt(t.h, CURLOPT_WRITEFUNCTION, write_object);
    curl_easy_setopt(t.h, CURLOPT_WRITEDATA, &d);
    t.perform();
    if (d.too_long || (t.code == CURLE_OK && t.status == 200 && d.got != o.size)) {
      std::lock_guard<std::mutex> lk(mu_);
      bad_.insert(o.sha256);
      r.outcome = Outcome::Corrupt;
      r.message = "remote cache object " + obj + " has " + (d.too_long ? "more" : std::to_string(d.got)) +
                  " bytes, not " + std::to_string(o.size) + " (truncated or wrong); ignored it";
      return r;
    }
    if (std::string e = t.transport_error(); !e.empty()) {
      r.outcome = Outcome::Down;
      r.message = "remote cache " + shown_ + ": GET /cas/" + o.sha256 + " failed after " + human(d.got) +
                  " of " + human(o.size) + ": " + e;
      return r;
    }
    if (t.status == 404) {
      r.outcome = Outcome::Corrupt;
      r.message = "remote cache object " + obj + " is missing though its record names it; ignored the record";
      return r;
    }
    if (t.status != 200) {
      r.outcome = Outcome::Down;
      r.message = http_failure(shown_, "GET /cas/" + o.sha256, t.status);
      return r;
    }
    const std::string sha = d.sha.hex();
    const Digest x = d.xxh.digest();
    if (sha != o.sha256 || x != entry->files[k].digest) {
      std::lock_guard<std::mutex> lk(mu_);
      bad_.insert(o.sha256);
      r.outcome = Outcome::Corrupt;
      r.message = "remote cache object " + obj + " is corrupt (its contents hash to sha256 " +
                  sha.substr(0, 16) + "...); ignored it";
      return r;
    }
    file.commit();
    ::chmod(dest.c_str(), 0444);
    ++r.objects;
    r.bytes += o.size;
  }
  local.record(key, *entry);
  r.outcome = Outcome::Hit;
  return r;
}

RemoteCache::Result RemoteCache::upload(const std::string& key, const Cache& local) {
  Result r;
  std::string why_not;
  const auto entry = local.lookup(key, &why_not);
  if (!entry) throw Error("uploading node " + key.substr(0, 12) + ": " + why_not);
  std::ostringstream rec;
  rec << kRemoteHeader << "\nnode " << key << "\n";
  for (const auto& f : entry->files) {
    const std::string path = local.object_path(f.digest);
    const std::string sha = sha256_file(path);
    rec << "object " << sha << " " << f.size << " " << f.digest.hex() << " "
        << (f.suffix.empty() ? "-" : f.suffix) << "\n";
    const std::string url = base_ + "/cas/" + sha;
    bool replace = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      replace = bad_.count(sha) > 0;
    }
    if (!replace) {
      Transfer head(*this, url);
      curl_easy_setopt(head.h, CURLOPT_NOBODY, 1L);
      head.perform();
      if (std::string e = head.transport_error(); !e.empty()) {
        r.outcome = Outcome::Down;
        r.message = "remote cache " + shown_ + ": HEAD /cas/" + sha + ": " + e;
        return r;
      }
      if (head.status == 200) continue;  // already there (PUT is by content: the same bytes)
      if (head.status != 404) {
        r.outcome = Outcome::Down;
        r.message = http_failure(shown_, "HEAD /cas/" + sha, head.status);
        return r;
      }
    }
    std::FILE* fp = std::fopen(path.c_str(), "rb");
    if (!fp) throw Error(path + ": cannot open: " + std::strerror(errno));
    Transfer put(*this, url);
    curl_easy_setopt(put.h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(put.h, CURLOPT_READFUNCTION, read_file);
    curl_easy_setopt(put.h, CURLOPT_READDATA, fp);
    curl_easy_setopt(put.h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(f.size));
    curl_easy_setopt(put.h, CURLOPT_WRITEFUNCTION, discard_body);
    put.perform();
    std::fclose(fp);
    if (std::string e = put.transport_error(); !e.empty()) {
      r.outcome = Outcome::Down;
      r.message = "remote cache " + shown_ + ": PUT /cas/" + sha + ": " + e;
      return r;
    }
    if (put.status < 200 || put.status > 299) {
      r.outcome = Outcome::Down;
      r.message = http_failure(shown_, "PUT /cas/" + sha, put.status);
      return r;
    }
    ++r.objects;
    r.bytes += f.size;
  }
  // The record last: it names only objects the server now has.
  rec << Cache::entry_text(*entry);
  const std::string body = rec.str();
  const std::string ak = ac_key(key);
  Transfer put(*this, base_ + "/ac/" + ak);
  curl_easy_setopt(put.h, CURLOPT_CUSTOMREQUEST, "PUT");
  curl_easy_setopt(put.h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(put.h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(put.h, CURLOPT_WRITEFUNCTION, discard_body);
  put.perform();
  if (std::string e = put.transport_error(); !e.empty()) {
    r.outcome = Outcome::Down;
    r.message = "remote cache " + shown_ + ": PUT /ac/" + ak + ": " + e;
    return r;
  }
  if (put.status < 200 || put.status > 299) {
    r.outcome = Outcome::Down;
    r.message = http_failure(shown_, "PUT /ac/" + ak, put.status);
    if (put.status == 400)
      r.message +=
          " (bazel-remote refuses records that are not ActionResults: run it with "
          "--disable_http_ac_validation)";
    return r;
  }
  r.outcome = Outcome::Hit;
  return r;
}

}  // namespace qforge
