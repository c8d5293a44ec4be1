// NumPy .npz reader: a ZIP archive of .npy members.
//
// np.savez stores members uncompressed (method 0), np.savez_compressed
// deflates them (method 8). numpy writes every member with force_zip64, so
// local headers carry 0xFFFFFFFF sizes and a ZIP64 extra field; the central
// directory is authoritative and is what we read sizes and CRCs from (the
// local header only locates the data). Layout, from the end of the file:
//
//   end of central directory (EOCD, 22 bytes + comment)
//   [ZIP64 EOCD locator (20 bytes) and ZIP64 EOCD record, when counts or
//    offsets overflow 16/32 bits]
//   central directory: one 46-byte entry + name + extra + comment per member
//   members: 30-byte local header + name + extra, then the (compressed) data
//
// Every offset and size is checked against the bytes before it is used, the
// members may not overlap, a deflated member must inflate to exactly its
// declared size (a "deflate bomb" stops at the declared size) and its CRC-32
// must match.
#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <utility>

#include "npy_internal.h"
#include "qforge/dataset.h"
#include "qforge/status.h"

namespace qforge {
namespace {

using detail::printable;

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint64_t kEocdSize = 22;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kZip64EocdSize = 56;
// Deflate cannot expand more than 1032:1 (a 258-byte match costs at least two bits).
constexpr uint64_t kMaxDeflateRatio = 1032;

class Zip {
 public:
  Zip(const BlobPtr& blob, const std::string& source)
      : p_(blob ? blob->data() : nullptr), n_(blob ? blob->size() : 0), source_(source) {}

  uint64_t size() const { return n_; }
  const uint8_t* at(uint64_t off) const { return p_ + off; }

  [[noreturn]] void fail(uint64_t offset, const std::string& msg) const {
    throw Error(fmt::format("{}: byte {}: {}", source_, offset, msg));
  }

  // Checks that [off, off+len) lies inside [0, limit).
  void need(uint64_t off, uint64_t len, uint64_t limit, const char* what) const {
    if (off > limit || len > limit - off)
      fail(off, fmt::format("{} ({} bytes at byte {}) runs past byte {}: truncated or corrupt "
                            "archive",
                            what, len, off, limit));
  }

  uint16_t u16(uint64_t off) const { return static_cast<uint16_t>(p_[off] | p_[off + 1] << 8); }
  uint32_t u32(uint64_t off) const {
    return static_cast<uint32_t>(p_[off]) | static_cast<uint32_t>(p_[off + 1]) << 8 |
           static_cast<uint32_t>(p_[off + 2]) << 16 | static_cast<uint32_t>(p_[off + 3]) << 24;
  }
  uint64_t u64(uint64_t off) const {
    return static_cast<uint64_t>(u32(off)) | static_cast<uint64_t>(u32(off + 4)) << 32;
  }

 private:
  const uint8_t* p_;
  uint64_t n_;
  const std::string& source_;
};

struct Member {
  std::string name;
  uint64_t entry_at = 0;  // central directory entry
  uint16_t flags = 0;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local_at = 0;
  uint64_t data_at = 0;  // after the local header
};

struct Directory {
  uint64_t entries = 0, cd_at = 0, cd_size = 0;
  uint64_t cd_limit = 0;  // the central directory must end by here
};

Directory read_end(const Zip& z) {
  const uint64_t n = z.size();
  if (n < kEocdSize)
    z.fail(0, fmt::format("not a ZIP archive: {} bytes, an .npz is at least {}", n, kEocdSize));
  uint32_t first = z.u32(0);
  if (first != kLocalSig && first != kEocdSig)
    z.fail(0, fmt::format("not a ZIP archive: expected 'PK\\x03\\x04', found '{}'",
                          printable(std::string_view(reinterpret_cast<const char*>(z.at(0)), 4), 20)));
  // The EOCD is the last record; its comment (<= 65535 bytes) runs to the end.
  uint64_t eocd = UINT64_MAX;
  uint64_t lowest = n - kEocdSize > 0xFFFF ? n - kEocdSize - 0xFFFF : 0;
  for (uint64_t pos = n - kEocdSize + 1; pos-- > lowest;) {
    if (z.u32(pos) == kEocdSig && pos + kEocdSize + z.u16(pos + 20) == n) {
      eocd = pos;
      break;
    }
  }
  if (eocd == UINT64_MAX) z.fail(n, "no end-of-central-directory record: truncated, or not a ZIP archive");

  Directory d;
  uint16_t disk = z.u16(eocd + 4), cd_disk = z.u16(eocd + 6);
  uint16_t entries_here = z.u16(eocd + 8), entries = z.u16(eocd + 10);
  uint32_t cd_size = z.u32(eocd + 12), cd_at = z.u32(eocd + 16);
  d.entries = entries;
  d.cd_size = cd_size;
  d.cd_at = cd_at;
  d.cd_limit = eocd;
  const bool zip64 = entries == 0xFFFF || entries_here == 0xFFFF || cd_size == 0xFFFFFFFF ||
                     cd_at == 0xFFFFFFFF || disk == 0xFFFF || cd_disk == 0xFFFF;
  if (eocd >= kZip64LocatorSize && z.u32(eocd - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint64_t loc = eocd - kZip64LocatorSize;
    const uint64_t rec = z.u64(loc + 8);
    if (z.u32(loc + 4) != 0 || z.u32(loc + 16) > 1)
      z.fail(loc, "multi-disk (split) ZIP archives are not supported");
    z.need(rec, kZip64EocdSize, loc, "the ZIP64 end-of-central-directory record");
    if (z.u32(rec) != kZip64EocdSig)
      z.fail(rec, fmt::format("expected the ZIP64 end-of-central-directory signature "
                              "0x{:08x}, found 0x{:08x}",
                              kZip64EocdSig, z.u32(rec)));
    if (z.u32(rec + 16) != 0 || z.u32(rec + 20) != 0)
      z.fail(rec, "multi-disk (split) ZIP archives are not supported");
    uint64_t here64 = z.u64(rec + 24);
    d.entries = z.u64(rec + 32);
    if (here64 != d.entries) z.fail(rec + 24, "multi-disk (split) ZIP archives are not supported");
    d.cd_size = z.u64(rec + 40);
    d.cd_at = z.u64(rec + 48);
    d.cd_limit = rec;
  } else if (zip64) {
    z.fail(eocd,
           "the end-of-central-directory record needs a ZIP64 record, and there is none "
           "before it: truncated or corrupt archive");
  } else if (disk != 0 || cd_disk != 0 || entries_here != entries) {
    z.fail(eocd + 4, "multi-disk (split) ZIP archives are not supported");
  }
  z.need(d.cd_at, d.cd_size, d.cd_limit, "the central directory");
  if (d.entries > d.cd_size / kCentralSize)
    z.fail(d.cd_at, fmt::format("the central directory declares {} entries, its {} bytes hold at "
                                "most {}",
                                d.entries, d.cd_size, d.cd_size / kCentralSize));
  return d;
}

std::vector<Member> read_directory(const Zip& z, const Directory& d) {
  std::vector<Member> members;
  const uint64_t end = d.cd_at + d.cd_size;
  uint64_t pos = d.cd_at;
  for (uint64_t i = 0; i < d.entries; ++i) {
    z.need(pos, kCentralSize, end, "a central directory entry");
    if (z.u32(pos) != kCentralSig)
      z.fail(pos, fmt::format("expected central directory entry {} (signature 0x{:08x}), found "
                              "0x{:08x}",
                              i, kCentralSig, z.u32(pos)));
    Member m;
    m.entry_at = pos;
    m.flags = z.u16(pos + 8);
    m.method = z.u16(pos + 10);
    m.crc = z.u32(pos + 16);
    uint32_t csize32 = z.u32(pos + 20), usize32 = z.u32(pos + 24);
    uint16_t name_len = z.u16(pos + 28), extra_len = z.u16(pos + 30), comment_len = z.u16(pos + 32);
    uint16_t disk = z.u16(pos + 34);
    uint32_t local32 = z.u32(pos + 42);
    const uint64_t total = kCentralSize + name_len + extra_len + comment_len;
    z.need(pos, total, end, "a central directory entry with its name, extra field and comment");
    m.name.assign(reinterpret_cast<const char*>(z.at(pos + kCentralSize)), name_len);
    const std::string who =
        fmt::format("member '{}' (central directory entry at byte {})", printable(m.name, 80), pos);
    m.csize = csize32;
    m.usize = usize32;
    m.local_at = local32;
    // ZIP64 extended information: the 64-bit values of the fields saturated above, in order.
    bool want_u = usize32 == 0xFFFFFFFF, want_c = csize32 == 0xFFFFFFFF;
    bool want_l = local32 == 0xFFFFFFFF, want_d = disk == 0xFFFF;
    uint64_t x = pos + kCentralSize + name_len;
    const uint64_t x_end = x + extra_len;
    bool seen64 = false;
    while (x < x_end) {
      if (x_end - x < 4) z.fail(x, who + ": truncated extra field header");
      uint16_t id = z.u16(x), len = z.u16(x + 2);
      if (len > x_end - x - 4)
        z.fail(x, fmt::format("{}: extra field 0x{:04x} of {} bytes runs past the entry", who, id, len));
      if (id == 0x0001 && !seen64) {
        seen64 = true;
        uint64_t f = x + 4, f_end = x + 4 + len;
        auto take = [&](const char* what) {
          if (f_end - f < 8) z.fail(f, fmt::format("{}: the ZIP64 extra field lacks the {}", who, what));
          uint64_t v = z.u64(f);
          f += 8;
          return v;
        };
        if (want_u) m.usize = take("uncompressed size");
        if (want_c) m.csize = take("compressed size");
        if (want_l) m.local_at = take("local header offset");
        if (want_d) {
          if (f_end - f < 4) z.fail(f, who + ": the ZIP64 extra field lacks the disk number");
          disk = static_cast<uint16_t>(z.u32(f) == 0 ? 0 : 1);
        }
        want_u = want_c = want_l = false;
      }
      x += 4 + static_cast<uint64_t>(len);
    }
    if (want_u || want_c || want_l)
      z.fail(pos, who + ": sizes are 0xFFFFFFFF but there is no ZIP64 extra field");
    if (disk != 0) z.fail(pos + 34, who + ": multi-disk (split) ZIP archives are not supported");
    if (m.flags & 0x0001) z.fail(pos + 8, who + ": encrypted members are not supported");
    if (m.method != 0 && m.method != 8)
      z.fail(pos + 10, fmt::format("{}: compression method {} is not supported (an .npz uses 0, "
                                   "stored, or 8, deflate)",
                                   who, m.method));
    if (m.name.empty()) z.fail(pos + 28, who + ": empty member name");
    if (m.name.size() < 5 || m.name.compare(m.name.size() - 4, 4, ".npy") != 0)
      z.fail(pos + kCentralSize, who + ": not a .npy member (an .npz holds only .npy files)");
    for (const auto& o : members)
      if (o.name == m.name) z.fail(pos + kCentralSize, who + ": duplicate member name");

    // The local header, which must lie before the central directory.
    const uint64_t lh = m.local_at;
    z.need(lh, kLocalSize, d.cd_at, (who + ": local header").c_str());
    if (z.u32(lh) != kLocalSig)
      z.fail(lh, fmt::format("{}: expected a local header (signature 0x{:08x}), found 0x{:08x}", who,
                             kLocalSig, z.u32(lh)));
    uint16_t lname = z.u16(lh + 26), lextra = z.u16(lh + 28);
    z.need(lh, kLocalSize + lname + lextra, d.cd_at, (who + ": local header").c_str());
    if (lname != name_len || std::memcmp(z.at(lh + kLocalSize), z.at(pos + kCentralSize), lname) != 0)
      z.fail(
          lh + kLocalSize,
          fmt::format(
              "{}: the local header names '{}'", who,
              printable(std::string_view(reinterpret_cast<const char*>(z.at(lh + kLocalSize)), lname), 80)));
    m.data_at = lh + kLocalSize + lname + lextra;
    z.need(m.data_at, m.csize, d.cd_at, (who + ": data").c_str());
    members.push_back(std::move(m));
    pos += total;
  }
  if (pos != end)
    z.fail(pos, fmt::format("the central directory has {} bytes after its {} entries", end - pos, d.entries));
  // Members may not share bytes (overlapping entries make "zip bombs" of any size).
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& m : members) spans.emplace_back(m.local_at, m.data_at + m.csize);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) z.fail(spans[i].first, "two members overlap: corrupt archive");
  return members;
}

BlobPtr inflate_member(const Zip& z, const Member& m, const std::string& who) {
  if (m.usize > m.csize * kMaxDeflateRatio + 1024)
    z.fail(m.entry_at, fmt::format("{}: declares {} bytes uncompressed from {} deflated bytes, "
                                   "more than deflate can produce: corrupt archive",
                                   who, m.usize, m.csize));
  std::vector<uint8_t> out;
  try {
    out.resize(m.usize);
  } catch (const std::bad_alloc&) {
    z.fail(m.entry_at, fmt::format("{}: cannot allocate {} bytes to inflate it", who, m.usize));
  }
  z_stream s;
  std::memset(&s, 0, sizeof s);
  if (inflateInit2(&s, -MAX_WBITS) != Z_OK) z.fail(m.data_at, who + ": zlib inflateInit2 failed");
  struct End {
    z_stream* s;
    ~End() { inflateEnd(s); }
  } end{&s};
  const uint8_t* in = z.at(m.data_at);
  uint64_t in_left = m.csize, out_done = 0;
  uint8_t spill[1];
  bool spilling = false;
  while (true) {
    // zlib counts in uInt: feed and drain at most 1 GiB at a time.
    if (s.avail_in == 0 && in_left > 0) {
      s.next_in = const_cast<Bytef*>(in);
      s.avail_in = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      in += s.avail_in;
      in_left -= s.avail_in;
    }
    if (s.avail_out == 0) {
      if (out_done < m.usize) {
        s.next_out = out.data() + out_done;
        s.avail_out = static_cast<uInt>(std::min<uint64_t>(m.usize - out_done, 1u << 30));
      } else {
        // The declared size is full: any further output is a lie (or a bomb).
        s.next_out = spill;
        s.avail_out = 1;
        spilling = true;
      }
    }
    const uInt before_out = s.avail_out;
    const int ret = inflate(&s, Z_NO_FLUSH);
    const uInt produced = before_out - s.avail_out;
    if (spilling && produced > 0)
      z.fail(m.data_at, fmt::format("{}: inflates to more than its declared {} bytes: corrupt "
                                    "archive (or a deflate bomb)",
                                    who, m.usize));
    if (!spilling) out_done += produced;
    if (ret == Z_STREAM_END) break;
    if (ret == Z_OK) continue;
    if (ret == Z_BUF_ERROR && s.avail_in == 0 && in_left == 0)
      z.fail(m.data_at + m.csize, fmt::format("{}: the deflate stream ends early (after {} of {} "
                                              "bytes): truncated or corrupt archive",
                                              who, out_done, m.usize));
    if (ret == Z_MEM_ERROR) z.fail(m.data_at, who + ": zlib out of memory");
    z.fail(m.data_at + (m.csize - in_left - s.avail_in),
           fmt::format("{}: corrupt deflate data ({})", who, s.msg ? s.msg : "invalid stream"));
  }
  if (out_done != m.usize)
    z.fail(m.data_at,
           fmt::format("{}: inflates to {} bytes, the directory declares {}", who, out_done, m.usize));
  uint64_t consumed = m.csize - in_left - s.avail_in;
  if (consumed != m.csize)
    z.fail(m.data_at + consumed,
           fmt::format("{}: {} bytes after the end of the deflate stream", who, m.csize - consumed));
  return make_blob(std::move(out));
}

uint32_t crc_of(const uint8_t* p, uint64_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {
    uInt chunk = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

}  // namespace

std::vector<Array> read_npz_bytes(BlobPtr bytes, const std::string& source) {
  Zip z(bytes, source);
  Directory d = read_end(z);
  std::vector<Member> members = read_directory(z, d);
  if (members.empty()) z.fail(d.cd_at, "the archive holds no arrays");
  std::vector<Array> arrays;
  int index = 0;
  for (const auto& m : members) {
    const std::string who = fmt::format("member '{}' (data at byte {})", printable(m.name, 80), m.data_at);
    BlobPtr data;
    if (m.method == 0) {
      if (m.csize != m.usize)
        z.fail(m.entry_at, fmt::format("{}: stored, but its compressed size {} differs from its "
                                       "size {}",
                                       who, m.csize, m.usize));
      data = slice_blob(bytes, m.data_at, m.csize);
    } else {
      data = inflate_member(z, m, who);
    }
    uint32_t crc = crc_of(data->data(), data->size());
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    crc = m.crc;  // lets the fuzzer reach the members' .npy parsing
#endif
    if (crc != m.crc)
      z.fail(m.data_at, fmt::format("{}: CRC-32 mismatch: the directory says 0x{:08x}, the data "
                                    "gives 0x{:08x}: corrupt archive",
                                    who, m.crc, crc));
    Array a = read_npy_bytes(data, source + ":" + m.name);
    a.name = m.name.substr(0, m.name.size() - 4);
    a.index = index++;
    arrays.push_back(std::move(a));
  }
  return arrays;
}

std::vector<Array> read_npz(const std::string& path) { return read_npz_bytes(MappedFile::open(path), path); }

}  // namespace qforge
