//! The independent EIF reader of tests/it/eif.rs and tests/it/arm64.rs: Python's struct, zlib and
//! hashlib over the header's own section table (not stagebox's reader).

use super::*;

/// The independent reader: Python walks the header's section table (big-endian, 548-byte
/// header, 12-byte section headers), recomputes the CRC32 with zlib and the PCRs with hashlib,
/// and writes each section's data to `DIR/section-N-TYPE`. Prints JSON; `arch` is what the
/// header's flags say (bit 0, AWS's `EIF_HDR_ARCH_ARM64`: aarch64, else x86_64).
pub const PY_READER: &str = r#"
import hashlib, json, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
out = sys.argv[2]
magic, version, flags, mem, cpus, _res, n = struct.unpack('>4sHHQQHH', data[:28])
offs = struct.unpack('>32Q', data[28:284]); sizes = struct.unpack('>32Q', data[284:540])
crc_stored = struct.unpack('>I', data[544:548])[0]
crc = zlib.crc32(data[:544])
names = {1: 'kernel', 2: 'cmdline', 3: 'ramdisk', 4: 'signature', 5: 'metadata'}
secs = []
for i in range(n):
    o = offs[i]
    t, f, s = struct.unpack('>HHQ', data[o:o + 12])
    assert s == sizes[i], (i, s, sizes[i])
    crc = zlib.crc32(data[o:o + 12 + s], crc)
    secs.append((names[t], data[o + 12:o + 12 + s]))
    open('%s/section-%d-%s' % (out, i, names[t]), 'wb').write(data[o + 12:o + 12 + s])
assert offs[n - 1] + 12 + sizes[n - 1] == len(data), 'the table does not cover the file'
def ext(d):
    return hashlib.sha384(b'\0' * 48 + hashlib.sha384(d).digest()).hexdigest()
rds = [d for t, d in secs if t == 'ramdisk']
k = b''.join(d for t, d in secs if t == 'kernel'); c = b''.join(d for t, d in secs if t == 'cmdline')
print(json.dumps({'magic': magic.decode(), 'version': version, 'flags': flags, 'mem': mem, 'cpus': cpus,
  'crc_ok': crc == crc_stored, 'types': [t for t, _ in secs],
  'PCR0': ext(k + c + b''.join(rds)), 'PCR1': ext(k + c + rds[0]), 'PCR2': ext(b''.join(rds[1:])),
  'cmdline': c.decode(), 'arch': 'aarch64' if flags & 1 else 'x86_64'}))
"#;

pub fn py_read(eif: &Path, dir: &Path) -> serde_json::Value {
    std::fs::create_dir_all(dir).unwrap();
    let o = run(Command::new("python3").arg("-c").arg(PY_READER).arg(eif).arg(dir));
    serde_json::from_slice(&o.stdout).unwrap()
}

