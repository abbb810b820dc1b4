// plasmon-store as a process: flags, start-up, socket handling, shutdown,
// and the capacity it really offers.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/allocator.h"
#include "core/unix_socket.h"
#include "plasmon/client.h"
#include "tests/store_process.h"

namespace plasmon {
namespace {

using testing::RunCommand;
using testing::StoreBinary;
using testing::StoreProcess;

TEST(StoreDaemonTest, SigtermShutsDownCleanlyAndRemovesTheSocket) {
  StoreProcess store({"-m", "16M"});
  ASSERT_TRUE(store.started());
  std::string sock = store.socket();
  ASSERT_TRUE(std::filesystem::exists(sock));
  int status = store.Terminate();
  ASSERT_NE(status, -1);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_FALSE(std::filesystem::exists(sock));
}

TEST(StoreDaemonTest, SocketIsPrivateToItsOwnerByDefault) {
  StoreProcess store({"-m", "16M"});
  ASSERT_TRUE(store.started());
  struct stat st;
  ASSERT_EQ(::stat(store.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(StoreDaemonTest, SocketGroupOpensItToThatGroupOnly) {
  // nogroup exists on Debian; any group this process may chown to will do.
  struct group* g = ::getgrnam("nogroup");
  ASSERT_NE(g, nullptr);
  StoreProcess store({"-m", "16M", "--socket-group", "nogroup"});
  ASSERT_TRUE(store.started());
  struct stat st;
  ASSERT_EQ(::stat(store.socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(st.st_gid, g->gr_gid);
  auto r = RunCommand({StoreBinary(), "-s", testing::TempDir() + "/x.sock", "-m", "16M",
                       "--socket-group", "no-such-group-here"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no group"), std::string::npos) << r.err;
}

TEST(StoreDaemonTest, ALiveStoreOnTheSocketStopsASecondOne) {
  StoreProcess store({"-m", "16M"});
  ASSERT_TRUE(store.started());
  auto r = RunCommand({StoreBinary(), "-s", store.socket(), "-m", "16M"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("another store is already serving"), std::string::npos) << r.err;
  EXPECT_TRUE(store.Alive());
  Client c;
  EXPECT_TRUE(c.Connect(store.socket()).ok());
}

TEST(StoreDaemonTest, AStaleSocketFromADeadStoreIsReplaced) {
  std::string dir = testing::TempDir();
  std::string path = dir + "/stale.sock";
  {
    // A socket file whose listener is gone, as a SIGKILLed store leaves it.
    auto fd = ListenUnix(path, 0600);
    ASSERT_TRUE(fd.ok());
  }
  ASSERT_TRUE(std::filesystem::exists(path));
  pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(StoreBinary().c_str(), "plasmon-store", "-s", path.c_str(), "-m", "16M",
            "--log-level", "warn", nullptr);
    ::_exit(127);
  }
  Client c;
  Status st;
  for (int i = 0; i < 2000; i++) {
    st = c.Connect(path);
    if (st.ok()) break;
    ::usleep(10000);
  }
  EXPECT_TRUE(st.ok()) << st.ToString();
  ::kill(pid, SIGTERM);
  int status;
  ::waitpid(pid, &status, 0);
  std::filesystem::remove_all(dir);
}

TEST(StoreDaemonTest, BadFlagsGiveOneClearError) {
  auto r = RunCommand({StoreBinary(), "-s", "/tmp/unused.sock", "-m", "lots"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("invalid --memory 'lots'"), std::string::npos) << r.err;
  auto h = RunCommand({StoreBinary(), "--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* flag : {"--socket", "--memory", "--directory", "--hugepages", "--prefault"})
    EXPECT_NE(h.out.find(flag), std::string::npos) << flag;
}

// Flags are checked, not silently bent: a size the host cannot back, one
// that overflows, a log level in another case or mistyped, a congestion
// control the host does not have.
TEST(StoreDaemonTest, SizesTheHostCannotBackAndUnknownLogLevelsAreRefused) {
  struct Case {
    std::vector<std::string> flags;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {{"-m", "64T"}, "invalid --memory '64T': 64 TiB is more than "},
           {{"-m", "18446744073709551615"},
            "invalid --memory '18446744073709551615': 18446744073709551615 bytes is more than the "
            "largest arena, 64 TiB"},
           {{"-m", "99999999999999999999"}, "invalid --memory '99999999999999999999' (expected"},
           {{"--log-level", "inof"}, "invalid --log-level 'inof'"},
           // Named, a congestion control must be there (cubic, the default, may
           // fall back to the host's with a warning).
           {{"--tcp-congestion", "no-such-algo", "--redis", "unix:/tmp/plasmon-no-redis.sock",
             "--node-id", "x", "--listen", "127.0.0.1:0"},
            "congestion control 'no-such-algo' is not available here"},
       }) {
    // timeout(1): a store that took such a flag would run on.
    std::vector<std::string> argv = {"timeout", "20", StoreBinary(), "-s",
                                     "/tmp/plasmon-unused-flags.sock"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    auto r = RunCommand(argv);
    EXPECT_EQ(r.exit_code, 2) << c.flags[1] << ": " << r.err;
    EXPECT_EQ(r.err.rfind("plasmon-store: " + c.error, 0), 0u) << r.err;
  }
  // Any case of a known level works (INFO used to turn all logging off):
  // the store runs a second, logging at info, until timeout(1) stops it.
  std::string dir = testing::TempDir();
  auto info = RunCommand({"timeout", "1", StoreBinary(), "-s", dir + "/s.sock", "-m", "16M",
                          "--log-level", "INFO"});
  EXPECT_EQ(info.exit_code, 124) << info.err;
  EXPECT_NE(info.out.find(" info plasmon-store: store serving"), std::string::npos) << info.out;
  std::filesystem::remove_all(dir);
}

// Beyond what is free now (but not beyond what the backing has): a warning,
// or with --prefault, a refusal; beyond the backing's size: refused. On a
// 64 MiB tmpfs of our own (a private mount namespace) with 40 MiB taken.
TEST(StoreDaemonTest, MoreThanIsFreeWarnsAndCannotBePrefaulted) {
  std::string dir = testing::TempDir();
  auto run = [&](const std::string& flags) {
    std::string script = "mount -t tmpfs -o size=64M plasmon-test \"$0\" && "
                         "head -c 41943040 /dev/zero > \"$0/taken\" && "
                         "exec timeout 1 \"$1\" -s \"$0/s.sock\" -d \"$0\" " + flags;
    return RunCommand({"unshare", "-m", "/bin/sh", "-c", script, dir, StoreBinary()});
  };
  auto warned = run("-m 32M");
  EXPECT_EQ(warned.exit_code, 124) << warned.err;  // it ran until timeout(1) stopped it
  EXPECT_NE(warned.out.find("--memory 32M: 32 MiB is more than the file system of " + dir +
                            " has free now (24 MiB): filling the store may fail or wake the OOM "
                            "killer"), std::string::npos) << warned.out << warned.err;
  auto prefault = run("-m 32M --prefault");
  EXPECT_EQ(prefault.exit_code, 2) << prefault.err;
  EXPECT_NE(prefault.err.find("has free now (24 MiB): it cannot be prefaulted"), std::string::npos)
      << prefault.err;
  auto never = run("-m 65M");
  EXPECT_EQ(never.exit_code, 2) << never.err;
  EXPECT_NE(never.err.find("65 MiB is more than the file system of " + dir +
                           " can ever hold (64 MiB)"), std::string::npos) << never.err;
  EXPECT_EQ(run("-m 16M --prefault").exit_code, 124);  // fits: serves
  std::filesystem::remove_all(dir);
}

TEST(StoreDaemonTest, HugepagesWithoutReservedPagesFailsClearly) {
  std::ifstream f("/proc/sys/vm/nr_hugepages");
  int reserved = 0;
  f >> reserved;
  if (reserved > 0) GTEST_SKIP() << "huge pages are reserved here: the store would start";
  auto r = RunCommand({StoreBinary(), "-s", "/tmp/plasmon-unused-huge.sock", "-m", "64M",
                       "--hugepages"});
  EXPECT_EQ(r.exit_code, 2);  // refused as a flag, before the arena is made
  EXPECT_NE(r.err.find("huge pages"), std::string::npos) << r.err;
}

TEST(StoreDaemonTest, DirectoryBackedArenaServesObjects) {
  std::string dir = testing::TempDir();
  StoreProcess store({"-m", "16M", "-d", dir, "--prefault"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  ObjectID id = ObjectID::Random();
  ASSERT_TRUE(c.CreateAndSeal(id, "on a file").ok());
  EXPECT_EQ((*c.Get({id}, 0))[0].view(), "on a file");
  // The backing file is unlinked: nothing is left in the directory.
  EXPECT_TRUE(std::filesystem::is_empty(dir));
  std::filesystem::remove_all(dir);
}

// The capacity promise, through the real store: a 1 GiB store holds
// at least 95% of its capacity in 8 MiB objects (here: all 128 of them).
TEST(StoreDaemonTest, OneGiBStoreHolds8MiBObjectsUpToCapacity) {
  StoreProcess store({"-m", "1G"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  int n = 0;
  for (;;) {
    auto b = c.Create(ObjectID::Random(), 8 << 20);  // unsealed: never evicted
    if (!b.ok()) {
      EXPECT_TRUE(b.status().IsOutOfMemory()) << b.status().ToString();
      break;
    }
    n++;
  }
  auto st = c.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->capacity, 1ull << 30);
  EXPECT_GE(n, 122);  // 95% of 128
  EXPECT_GE(static_cast<double>(st->used), 0.95 * static_cast<double>(st->capacity));
}

// -m is the capacity objects get, not the arena rounded up to a page: a
// store started with -m 10000 offers 10000 bytes rounded down to whole
// allocation units (64 B), 9984, and never allocates past it (it once
// reported and handed out 12288).
TEST(StoreDaemonTest, CapacityIsExactlyWhatMemoryAsked) {
  StoreProcess store({"-m", "10000"});
  ASSERT_TRUE(store.started());
  Client c;
  ASSERT_TRUE(c.Connect(store.socket()).ok());
  auto st = c.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->capacity, 10000 / Allocator::kAlignment * Allocator::kAlignment);
  // Objects of one allocation unit each, unsealed (never evicted), until full.
  uint64_t n = 0;
  for (;;) {
    auto b = c.Create(ObjectID::Random(), Allocator::kAlignment);
    if (!b.ok()) {
      EXPECT_TRUE(b.status().IsOutOfMemory()) << b.status().ToString();
      break;
    }
    n++;
  }
  EXPECT_EQ(n, 10000 / Allocator::kAlignment);
  st = c.Stats();
  ASSERT_TRUE(st.ok());
  EXPECT_LE(st->used, 10000u);
  EXPECT_TRUE(c.Create(ObjectID::Random(), 10001).status().IsOutOfMemory() ||
              c.Create(ObjectID::Random(), 10001).status().IsInvalidArgument());
}

}  // namespace
}  // namespace plasmon
