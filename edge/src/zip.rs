//! A zip archive written front to back, for the CSV export: each file's sizes and CRC
//! follow its data (a data descriptor, general purpose flag bit 3), so nothing is ever
//! sought back to and nothing is held but the deflate window. The central directory at the
//! end is one small record per file.
//!
//! Files are limited to 4 GiB each and the archive to 4 GiB in all (no ZIP64): an export
//! that large is refused with [`ZipError::TooLarge`] rather than written wrong.

use std::io::Write;

use flate2::write::DeflateEncoder;
use flate2::Compression;

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
/// Sizes in a data descriptor; names in UTF-8.
const FLAGS: u16 = 0x0008 | 0x0800;
const DEFLATE: u16 = 8;
const VERSION: u16 = 20;

#[derive(Debug, PartialEq, Eq)]
pub enum ZipError {
    /// A file or the archive passed 4 GiB, or more than 65,535 files.
    TooLarge,
    /// Writing was out of order (a file started while another was open, data with none).
    Misuse(&'static str),
}

impl std::fmt::Display for ZipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZipError::TooLarge => write!(f, "the archive exceeds 4 GiB (zip without ZIP64)"),
            ZipError::Misuse(what) => write!(f, "zip writer misused: {what}"),
        }
    }
}

struct Entry {
    name: String,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u32,
}

struct Open {
    name: String,
    offset: u32,
    crc: crc32fast::Hasher,
    size: u64,
    compressed: u64,
    encoder: DeflateEncoder<Vec<u8>>,
}

/// Appends the archive to whatever buffer each call is given.
pub struct ZipWriter {
    offset: u64,
    entries: Vec<Entry>,
    open: Option<Open>,
    dos_time: u16,
    dos_date: u16,
}

fn u32_of(n: u64) -> Result<u32, ZipError> {
    u32::try_from(n).map_err(|_| ZipError::TooLarge)
}

impl ZipWriter {
    /// An empty archive whose files are dated `unix_secs` (UTC).
    pub fn new(unix_secs: u64) -> ZipWriter {
        let (dos_time, dos_date) = dos_datetime(unix_secs);
        ZipWriter {
            offset: 0,
            entries: Vec::new(),
            open: None,
            dos_time,
            dos_date,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(bytes);
        self.offset += bytes.len() as u64;
    }

    /// Starts the next file (the previous one must be finished).
    pub fn start_file(&mut self, name: &str, out: &mut Vec<u8>) -> Result<(), ZipError> {
        if self.open.is_some() {
            return Err(ZipError::Misuse("a file is still open"));
        }
        if self.entries.len() >= usize::from(u16::MAX) {
            return Err(ZipError::TooLarge);
        }
        let offset = u32_of(self.offset)?;
        let name_len = u16::try_from(name.len()).map_err(|_| ZipError::Misuse("name too long"))?;
        let mut header = Vec::with_capacity(30 + name.len());
        header.extend_from_slice(&LOCAL_HEADER.to_le_bytes());
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&FLAGS.to_le_bytes());
        header.extend_from_slice(&DEFLATE.to_le_bytes());
        header.extend_from_slice(&self.dos_time.to_le_bytes());
        header.extend_from_slice(&self.dos_date.to_le_bytes());
        header.extend_from_slice(&[0; 12]); // CRC and sizes: in the data descriptor
        header.extend_from_slice(&name_len.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        self.emit(out, &header);
        self.open = Some(Open {
            name: name.to_owned(),
            offset,
            crc: crc32fast::Hasher::new(),
            size: 0,
            compressed: 0,
            encoder: DeflateEncoder::new(Vec::new(), Compression::fast()),
        });
        Ok(())
    }

    /// Appends to the open file; whatever compressed output is ready goes to `out`.
    pub fn write(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), ZipError> {
        let open = self
            .open
            .as_mut()
            .ok_or(ZipError::Misuse("no file is open"))?;
        open.crc.update(data);
        open.size += data.len() as u64;
        open.encoder
            .write_all(data)
            .map_err(|_| ZipError::Misuse("deflate failed"))?;
        let ready = std::mem::take(open.encoder.get_mut());
        open.compressed += ready.len() as u64;
        if open.size > u64::from(u32::MAX) || open.compressed > u64::from(u32::MAX) {
            return Err(ZipError::TooLarge);
        }
        self.emit(out, &ready);
        Ok(())
    }

    /// Ends the open file with its data descriptor.
    pub fn finish_file(&mut self, out: &mut Vec<u8>) -> Result<(), ZipError> {
        let open = self
            .open
            .take()
            .ok_or(ZipError::Misuse("no file is open"))?;
        let rest = open
            .encoder
            .finish()
            .map_err(|_| ZipError::Misuse("deflate failed"))?;
        let entry = Entry {
            name: open.name,
            crc: open.crc.finalize(),
            compressed: u32_of(open.compressed + rest.len() as u64)?,
            size: u32_of(open.size)?,
            offset: open.offset,
        };
        self.emit(out, &rest);
        let mut descriptor = Vec::with_capacity(16);
        descriptor.extend_from_slice(&DATA_DESCRIPTOR.to_le_bytes());
        descriptor.extend_from_slice(&entry.crc.to_le_bytes());
        descriptor.extend_from_slice(&entry.compressed.to_le_bytes());
        descriptor.extend_from_slice(&entry.size.to_le_bytes());
        self.emit(out, &descriptor);
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the central directory; the archive is complete.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), ZipError> {
        if self.open.is_some() {
            self.finish_file(out)?;
        }
        let start = u32_of(self.offset)?;
        let mut directory = Vec::new();
        for e in &self.entries {
            directory.extend_from_slice(&CENTRAL_HEADER.to_le_bytes());
            directory.extend_from_slice(&VERSION.to_le_bytes()); // made by: MS-DOS, 2.0
            directory.extend_from_slice(&VERSION.to_le_bytes());
            directory.extend_from_slice(&FLAGS.to_le_bytes());
            directory.extend_from_slice(&DEFLATE.to_le_bytes());
            directory.extend_from_slice(&self.dos_time.to_le_bytes());
            directory.extend_from_slice(&self.dos_date.to_le_bytes());
            directory.extend_from_slice(&e.crc.to_le_bytes());
            directory.extend_from_slice(&e.compressed.to_le_bytes());
            directory.extend_from_slice(&e.size.to_le_bytes());
            // The name's length was checked when the file started.
            directory.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            directory.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
            directory.extend_from_slice(&e.offset.to_le_bytes());
            directory.extend_from_slice(e.name.as_bytes());
        }
        let size = u32_of(directory.len() as u64)?;
        let count = u16::try_from(self.entries.len()).map_err(|_| ZipError::TooLarge)?;
        directory.extend_from_slice(&END_OF_CENTRAL_DIRECTORY.to_le_bytes());
        directory.extend_from_slice(&[0; 4]); // this disk, the directory's disk
        directory.extend_from_slice(&count.to_le_bytes());
        directory.extend_from_slice(&count.to_le_bytes());
        directory.extend_from_slice(&size.to_le_bytes());
        directory.extend_from_slice(&start.to_le_bytes());
        directory.extend_from_slice(&0u16.to_le_bytes());
        self.emit(out, &directory);
        u32_of(self.offset).map(|_| ())
    }
}

/// MS-DOS time and date fields of a UTC time (two-second resolution, years 1980–2107).
fn dos_datetime(unix_secs: u64) -> (u16, u16) {
    let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
    let secs = unix_secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let year = year.clamp(1980, 2107);
    let time = ((secs / 3600) << 11) | ((secs % 3600 / 60) << 5) | ((secs % 60) / 2);
    let date = ((year - 1980) << 9) | (month << 5) | day;
    (
        u16::try_from(time).unwrap_or(0),
        u16::try_from(date).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_le_bytes([b[i], b[i + 1]])
    }
    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
    }

    /// Reads an archive from its central directory: (name, contents), checking each CRC
    /// and that the local header and data descriptor agree.
    fn read(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let end = archive.len() - 22;
        assert_eq!(u32_at(archive, end), END_OF_CENTRAL_DIRECTORY);
        let count = usize::from(u16_at(archive, end + 10));
        let mut at = u32_at(archive, end + 16) as usize;
        let mut files = Vec::new();
        for _ in 0..count {
            assert_eq!(u32_at(archive, at), CENTRAL_HEADER);
            let crc = u32_at(archive, at + 16);
            let compressed = u32_at(archive, at + 20) as usize;
            let size = u32_at(archive, at + 24) as usize;
            let name_len = usize::from(u16_at(archive, at + 28));
            let offset = u32_at(archive, at + 42) as usize;
            let name = String::from_utf8(archive[at + 46..at + 46 + name_len].to_vec()).unwrap();
            assert_eq!(u32_at(archive, offset), LOCAL_HEADER);
            let data = offset + 30 + usize::from(u16_at(archive, offset + 26));
            let mut contents = Vec::new();
            flate2::read::DeflateDecoder::new(&archive[data..data + compressed])
                .read_to_end(&mut contents)
                .unwrap();
            assert_eq!(contents.len(), size);
            assert_eq!(crc32fast::hash(&contents), crc);
            let descriptor = data + compressed;
            assert_eq!(u32_at(archive, descriptor), DATA_DESCRIPTOR);
            assert_eq!(u32_at(archive, descriptor + 4), crc);
            files.push((name, contents));
            at += 46 + name_len;
        }
        files
    }

    #[test]
    fn files_written_in_pieces_read_back() {
        let mut zip = ZipWriter::new(1_764_000_000);
        let mut out = Vec::new();
        zip.start_file("contacts.csv", &mut out).unwrap();
        let mut expected = Vec::new();
        for i in 0..20_000 {
            let line = format!("{i},name {i},n{i}@example.test\r\n");
            zip.write(line.as_bytes(), &mut out).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        zip.finish_file(&mut out).unwrap();
        zip.start_file("empty.csv", &mut out).unwrap();
        zip.finish_file(&mut out).unwrap();
        // finish() closes a file left open.
        zip.start_file("manifest.json", &mut out).unwrap();
        zip.write(b"{}", &mut out).unwrap();
        zip.finish(&mut out).unwrap();
        let files = read(&out);
        assert_eq!(files.len(), 3);
        assert_eq!(files[2], ("manifest.json".to_owned(), b"{}".to_vec()));
        assert_eq!(files[0].0, "contacts.csv");
        assert_eq!(files[0].1, expected);
        assert!(files[1].1.is_empty());
        assert!(out.len() < expected.len() / 2, "deflated");
    }

    #[test]
    fn misuse_is_refused() {
        let mut zip = ZipWriter::new(0);
        let mut out = Vec::new();
        assert!(zip.write(b"x", &mut out).is_err());
        assert!(zip.finish_file(&mut out).is_err());
        zip.start_file("a", &mut out).unwrap();
        assert!(zip.start_file("b", &mut out).is_err());
    }

    #[test]
    fn dos_dates() {
        // 2026-11-24 12:34:56 UTC
        let (time, date) = dos_datetime(1_795_523_696);
        assert_eq!(date >> 9, 2026 - 1980);
        assert_eq!((date >> 5) & 0xf, 11);
        assert_eq!(date & 0x1f, 24);
        assert_eq!(time >> 11, 12);
        assert_eq!((time >> 5) & 0x3f, 34);
        assert_eq!((time & 0x1f) * 2, 56);
        assert_eq!(dos_datetime(0).1 >> 9, 0, "before 1980: clamped");
    }
}
