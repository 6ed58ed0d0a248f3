//! The tree's directory structure as flat arrays of path indexes, for the emitters that lay
//! out inodes and directory listings (SquashFS, EROFS; the ISO groups its own entries with
//! [`group_children`] and names them with [`name`]).
//!
//! A path is its index in the tree's walk (bytewise path order, the root 0). [`Dirs`] holds
//! each path's parent and each directory's children (in walk order, which is name order) in
//! three `u32` arrays: 12 bytes a path and no allocation per entry, where a map from path to
//! index and a `Vec` of children per directory cost several times that at the tree's path
//! cap (docs/limits.md).

use crate::tree::Node;

/// Parents and children of the paths of a walk.
pub struct Dirs {
    parent: Vec<u32>,
    /// Children of `i` are `child[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    child: Vec<u32>,
}

/// The last component of a path (the root's is empty).
pub fn name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(k) => &path[k + 1..],
        None => path,
    }
}

/// Items grouped by their parent: `parent[i]` (for every `i` but 0, the root, which has
/// none) is a group below `groups`. Returns `start` (`groups + 1` offsets) and the items,
/// group after group and each group's in ascending order: group `g`'s items are
/// `items[start[g]..start[g + 1]]`. A counting sort: two `u32` arrays, no allocation per group.
pub fn group_children(parent: &[u32], groups: usize) -> (Vec<u32>, Vec<u32>) {
    // Count children into start[parent], sum up to where each range ends, then fill from the
    // last child back so each range is ascending and start[g] is where it begins.
    let mut start = vec![0u32; groups + 1];
    for &p in parent.iter().skip(1) {
        start[p as usize] += 1;
    }
    let mut sum = 0;
    for s in start.iter_mut() {
        sum += *s;
        *s = sum;
    }
    let mut child = vec![0u32; parent.len().saturating_sub(1)];
    for i in (1..parent.len()).rev() {
        let p = parent[i] as usize;
        start[p] -= 1;
        child[start[p] as usize] = i as u32;
    }
    (start, child)
}

impl Dirs {
    /// From the tree's walk (the root first, then bytewise path order); every path's parent
    /// is in it (the tree guarantees it).
    pub fn new(nodes: &[(&[u8], &Node)]) -> Self {
        let n = nodes.len();
        assert!(n < u32::MAX as usize, "more paths than a u32 counts");
        let mut parent = vec![0u32; n];
        for (i, (p, _)) in nodes.iter().enumerate().skip(1) {
            if let Some(k) = p.iter().rposition(|&b| b == b'/') {
                // Parents sort before their children: search the paths before this one.
                let at = nodes[..i].binary_search_by(|(q, _)| (*q).cmp(&p[..k])).expect("the tree holds every parent");
                parent[i] = at as u32;
            }
        }
        let (start, child) = group_children(&parent, n);
        Dirs { parent, start, child }
    }

    pub fn parent(&self, i: usize) -> usize {
        self.parent[i] as usize
    }

    /// The children of `i`, in walk (= name) order.
    pub fn children(&self, i: usize) -> &[u32] {
        &self.child[self.start[i] as usize..self.start[i + 1] as usize]
    }

    /// Every path in post-order (each directory's children, each subtree whole and in name
    /// order, before the directory; the root last).
    pub fn post_order(&self) -> PostOrder<'_> {
        PostOrder { dirs: self, stack: if self.parent.is_empty() { Vec::new() } else { vec![(0, 0)] } }
    }
}

/// See [`Dirs::post_order`]; the stack holds (directory, children visited) down to the path
/// being visited, so it is as deep as the tree.
pub struct PostOrder<'d> {
    dirs: &'d Dirs,
    stack: Vec<(u32, u32)>,
}

impl Iterator for PostOrder<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            let (node, next) = self.stack.last_mut()?;
            let children = self.dirs.children(*node as usize);
            if let Some(&c) = children.get(*next as usize) {
                *next += 1;
                self.stack.push((c, 0));
                continue;
            }
            let node = *node as usize;
            self.stack.pop();
            return Some(node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Kind, Meta, Node};

    #[test]
    fn parents_children_and_post_order_of_names_that_sort_around_the_slash() {
        // "a-b" sorts between "a" and "a/x" bytewise ('-' < '/').
        let dir = Node { kind: Kind::Dir, meta: Meta { mode: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: Default::default() } };
        let paths: [&[u8]; 6] = [b"", b"a", b"a-b", b"a-b/y", b"a/x", b"a/z"];
        let nodes: Vec<(&[u8], &Node)> = paths.iter().map(|p| (*p, &dir)).collect();
        let d = Dirs::new(&nodes);
        assert_eq!((1..6).map(|i| d.parent(i)).collect::<Vec<_>>(), [0, 0, 2, 1, 1]);
        assert_eq!(d.children(0), [1, 2]);
        assert_eq!(d.children(1), [4, 5]);
        assert_eq!(d.children(4), [] as [u32; 0]);
        assert_eq!(d.post_order().collect::<Vec<_>>(), [4, 5, 1, 3, 2, 0]);
        assert_eq!(name(b"a-b/y"), b"y");
        assert_eq!(name(b"a"), b"a");
    }
}
