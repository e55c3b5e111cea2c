// Streaming COPC viewer for `eotwin pointcloud serve`.
//
// copc.js reads the header, the info VLR and the hierarchy with HTTP range requests; laz-perf (LASzip as
// WebAssembly, served locally) decompresses one octree node (one LAZ chunk) at a time; three.js draws.
// Level of detail first: the root node of every cloud is fetched and drawn before anything else (the
// "first frame"), then deeper nodes by screen-space priority (the projected point spacing of the node,
// nearest and largest first) until the point budget is spent or the spacing drops below `detail` pixels.
// What was loaded is published as `window.eotwinViewer` and POSTed to the server (`/api/report`), so a
// test (or a person) can check that the first frame needed only a small share of the file.
import * as THREE from 'three';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
import { Copc } from 'copc';
import { createLazPerf } from 'laz-perf';

const params = new URLSearchParams(location.search);
const POINT_BUDGET = positiveNumber(params.get('budget'), 3_000_000);
const DETAIL_PX = positiveNumber(params.get('detail'), 1.0); // refine while a node's point spacing exceeds this
const MAX_IN_FLIGHT = 4;
const DIMENSIONS = ['X', 'Y', 'Z', 'Red', 'Green', 'Blue'];

const state = {
  status: 'starting',
  error: null,
  clouds: [],
  nodesLoaded: 0, // drawn now
  nodesEvicted: 0, // given up to keep within the point budget when the view changed
  pointsLoaded: 0,
  bytesLoaded: 0,
  requests: 0,
  nodesInHierarchy: 0,
  firstFrameBytes: null,
  firstFrameNodes: null,
  firstFrameMs: null,
  firstFramePixels: null, // canvas pixels the first frame drew (not background): proof that points were drawn
  drawnPixels: null,
  loadOrder: [], // "cloud:D-X-Y-Z" in the order nodes were drawn
  pointBudget: POINT_BUDGET,
};
window.eotwinViewer = state;

function positiveNumber(text, fallback) {
  const value = Number(text);
  return text !== null && Number.isFinite(value) && value > 0 ? value : fallback;
}

const hud = document.getElementById('hud');
function show(message) {
  if (hud) hud.textContent = message;
}

async function report(event) {
  // the server snapshots the bytes it has served when a report arrives: awaited, so nothing else is in flight
  const body = JSON.stringify({ event, ...state, loadOrder: state.loadOrder });
  const response = await fetch('api/report', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
  if (!response.ok) throw new Error(`report refused: HTTP ${response.status}`);
}

const FIRST_FRAME_CLOUDS = 16; // a tiled run: the first frame shows at most this many tiles' roots
const ROOT_POINTS_GUESS = 65536; // ranks a cloud not yet opened: its root's spacing from its area and this
const COPC_JS_HEAD = 65536; // copc.js reads this much at once to walk the header and VLRs

function rangeGetter({ url, size, header_bytes: headerBytes }) {
  async function get(begin, end) {
    const response = await fetch(url, { headers: { Range: `bytes=${begin}-${end - 1}` } });
    if (response.status !== 206) throw new Error(`${url}: range request answered HTTP ${response.status}, not 206`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    state.bytesLoaded += bytes.length;
    state.requests += 1;
    return bytes;
  }
  return function getter(begin, end) {
    // the header and VLRs end where the point data starts (the server read that offset): fetch only them,
    // not copc.js's 64 KiB guess (the EVLRs lie past 64 KiB in such a file, so copc.js fetches them itself)
    if (begin === 0 && end === COPC_JS_HEAD && headerBytes > 0 && headerBytes < COPC_JS_HEAD && size > COPC_JS_HEAD) {
      return get(0, headerBytes);
    }
    return get(begin, end);
  };
}

// ---- scene ------------------------------------------------------------------------------------------
const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
renderer.setPixelRatio(window.devicePixelRatio || 1);
renderer.setSize(window.innerWidth, window.innerHeight);
document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0x101418);
const camera = new THREE.PerspectiveCamera(60, window.innerWidth / window.innerHeight, 1, 1e7);
camera.up.set(0, 0, 1); // LAS: Z is up
const controls = new OrbitControls(camera, renderer.domElement);
// Points are squares as wide as the cloud's finest spacing (in metres, so no gaps close up), never under
// MIN_POINT_PX pixels (so coarse levels seen from afar still cover the ground). Colours are the file's sRGB
// bytes, written unchanged.
const MIN_POINT_PX = 2;
const pointScale = { value: 1 }; // pixels per metre at distance 1: (canvas height / 2) / tan(fov / 2)

function updatePointScale() {
  pointScale.value = renderer.domElement.height / 2 / Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2);
}

function pointMaterial(worldSize) {
  return new THREE.ShaderMaterial({
    uniforms: { worldSize: { value: worldSize }, minPixels: { value: MIN_POINT_PX * renderer.getPixelRatio() },
      scale: pointScale },
    vertexShader: `
      uniform float worldSize; uniform float minPixels; uniform float scale;
      attribute vec3 color; varying vec3 vColour;
      void main() {
        vColour = color;
        vec4 eye = modelViewMatrix * vec4(position, 1.0);
        gl_Position = projectionMatrix * eye;
        gl_PointSize = max(minPixels, worldSize * scale / -eye.z);
      }`,
    fragmentShader: `
      varying vec3 vColour;
      void main() { gl_FragColor = vec4(vColour, 1.0); }`,
  });
}

function render() {
  renderer.render(scene, camera);
}

let renderQueued = false;
function requestRender() {
  // one draw per display frame, however many nodes arrived in it (software WebGL draws slowly)
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

let background = null; // the empty scene's pixel, read back before any point is drawn

function readPixels() {
  const gl = renderer.getContext();
  const width = gl.drawingBufferWidth;
  const height = gl.drawingBufferHeight;
  const pixels = new Uint8Array(width * height * 4);
  gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
  return pixels;
}

function drawnPixels() {
  // read the frame back and count the pixels that differ from the empty scene's background
  const pixels = readPixels();
  let drawn = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i] !== background[0] || pixels[i + 1] !== background[1] || pixels[i + 2] !== background[2]) drawn += 1;
  }
  return drawn;
}

// ---- octree -----------------------------------------------------------------------------------------
function nodeBox(cloud, key) {
  const [d, x, y, z] = key.split('-').map(Number);
  const [minx, miny, minz, maxx, maxy, maxz] = cloud.copc.info.cube;
  const size = (maxx - minx) / 2 ** d;
  const min = new THREE.Vector3(minx + x * size, miny + y * size, minz + z * size).sub(origin);
  return { depth: d, box: new THREE.Box3(min, min.clone().addScalar(size)) };
}

function childKeys(key) {
  const [d, x, y, z] = key.split('-').map(Number);
  const keys = [];
  for (let i = 0; i < 8; i += 1) keys.push(`${d + 1}-${2 * x + (i & 1)}-${2 * y + ((i >> 1) & 1)}-${2 * z + ((i >> 2) & 1)}`);
  return keys;
}

function mergeSubtree(cloud, subtree) {
  for (const [key, node] of Object.entries(subtree.nodes)) {
    if (!node || cloud.entries.has(key)) continue;
    cloud.entries.set(key, { key, node, ...nodeBox(cloud, key), loaded: false, loading: false, points: null });
    state.nodesInHierarchy += 1;
  }
  for (const [key, page] of Object.entries(subtree.pages)) {
    if (page && !cloud.entries.has(key)) cloud.pages.set(key, page);
  }
}

async function openCloud(cloud) {
  cloud.opening = true;
  cloud.copc = await Copc.create(cloud.get);
  mergeSubtree(cloud, await Copc.loadHierarchyPage(cloud.get, cloud.copc.info.rootHierarchyPage));
  // the finest spacing: the root's halved once per level of the root page (deeper pages would only make
  // the points larger than needed: overlapping, never gaps)
  const depth = Math.max(...[...cloud.entries.values()].map((entry) => entry.depth));
  cloud.material = pointMaterial(cloud.copc.info.spacing / 2 ** depth);
  cloud.opening = false;
}

async function loadPage(cloud, key) {
  const page = cloud.pages.get(key);
  cloud.pages.delete(key);
  mergeSubtree(cloud, await Copc.loadHierarchyPage(cloud.get, page));
}

async function loadNode(cloud, entry) {
  entry.loading = true;
  let count = 0;
  if (entry.node.pointCount > 0) {
    const view = await Copc.loadPointDataView(cloud.get, cloud.copc, entry.node, { lazPerf, include: DIMENSIONS });
    count = view.pointCount;
    const [gx, gy, gz] = ['X', 'Y', 'Z'].map((name) => view.getter(name));
    const [gr, gg, gb] = ['Red', 'Green', 'Blue'].map((name) => view.getter(name));
    const positions = new Float32Array(count * 3);
    const colours = new Uint8Array(count * 3);
    for (let i = 0; i < count; i += 1) {
      positions[3 * i] = gx(i) - origin.x;
      positions[3 * i + 1] = gy(i) - origin.y;
      positions[3 * i + 2] = gz(i) - origin.z;
      colours[3 * i] = gr(i) >> 8; // LAS colour is 16-bit
      colours[3 * i + 1] = gg(i) >> 8;
      colours[3 * i + 2] = gb(i) >> 8;
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
    geometry.setAttribute('color', new THREE.BufferAttribute(colours, 3, true));
    entry.points = new THREE.Points(geometry, cloud.material);
    scene.add(entry.points);
  }
  if (entry.depth === 0 && cloud.outline) {
    scene.remove(cloud.outline);
    cloud.outline = null;
  }
  entry.loading = false;
  entry.loaded = true;
  state.nodesLoaded += 1;
  state.pointsLoaded += count;
  state.loadOrder.push(`${cloud.name}:${entry.key}`);
  // the hierarchy pages below this node are small: fetch them now so its children can be ranked
  await Promise.all(childKeys(entry.key).filter((key) => cloud.pages.has(key)).map((key) => loadPage(cloud, key)));
}

const frustum = new THREE.Frustum();
const projection = new THREE.Matrix4();

function viewRanking() {
  // a node's priority: its point spacing projected on the screen (pixels); -1 outside the view
  projection.multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse);
  frustum.setFromProjectionMatrix(projection);
  const pixelsPerUnit = window.innerHeight / 2 / Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2);
  return (cloud, entry) => {
    // entry null: a cloud not opened yet, ranked by its bounds and a guess of its root's spacing
    const box = entry ? entry.box : cloud.box;
    if (!frustum.intersectsBox(box)) return -1;
    const distance = Math.max(box.distanceToPoint(camera.position), 1e-6);
    const size = cloud.box.getSize(new THREE.Vector3());
    const spacing = entry ? cloud.copc.info.spacing / 2 ** entry.depth
      : Math.sqrt((size.x * size.y) / Math.max(1, Math.min(cloud.points || 1, ROOT_POINTS_GUESS)));
    return spacing * pixelsPerUnit / distance;
  };
}

function candidates(rank) {
  // children of drawn nodes, inside the view and coarser than DETAIL_PX on screen, highest priority first
  const ranked = [];
  for (const cloud of state.clouds) {
    if (!cloud.copc) {
      const priority = cloud.opening ? -1 : rank(cloud, null);
      if (priority >= 0) ranked.push({ cloud, entry: null, priority });
      continue;
    }
    for (const entry of cloud.entries.values()) {
      if (entry.loaded || entry.loading) continue;
      const parent = entry.depth === 0 ? null : cloud.entries.get(parentKey(entry.key));
      if (entry.depth > 0 && !(parent && parent.loaded)) continue;
      const priority = rank(cloud, entry);
      if (priority < 0 || (entry.depth > 0 && priority < DETAIL_PX)) continue;
      ranked.push({ cloud, entry, priority });
    }
  }
  return ranked.sort((a, b) => b.priority - a.priority);
}

function evictable(rank) {
  // drawn leaves of the loaded tree (never a root), lowest priority first: what a full budget gives up
  const leaves = [];
  for (const cloud of state.clouds) {
    for (const entry of cloud.entries.values()) {
      if (!entry.loaded || entry.depth === 0) continue;
      const busyChild = childKeys(entry.key).some((key) => {
        const child = cloud.entries.get(key);
        return child && (child.loaded || child.loading);
      });
      if (!busyChild) leaves.push({ cloud, entry, priority: rank(cloud, entry) });
    }
  }
  return leaves.sort((a, b) => a.priority - b.priority);
}

function unload(entry) {
  if (entry.points) {
    scene.remove(entry.points);
    entry.points.geometry.dispose();
    entry.points = null;
  }
  entry.loaded = false;
  state.nodesLoaded -= 1;
  state.nodesEvicted += 1;
  state.pointsLoaded -= entry.node.pointCount;
}

function parentKey(key) {
  const [d, x, y, z] = key.split('-').map(Number);
  return `${d - 1}-${x >> 1}-${y >> 1}-${z >> 1}`;
}

let inFlight = 0;
let pendingPoints = 0; // points of the nodes being fetched
let idleReported = false;

function schedule() {
  if (state.status === 'error') return;
  const rank = viewRanking();
  let leaves = null;
  for (const { cloud, entry, priority } of candidates(rank)) {
    if (inFlight >= MAX_IN_FLIGHT) break;
    if (entry === null) { // open the cloud; its root is ranked (with its real size) on the next pass
      inFlight += 1;
      idleReported = false;
      state.status = 'streaming';
      openCloud(cloud).then(() => {
        inFlight -= 1;
        schedule();
      }).catch(fail);
      continue;
    }
    if (entry.depth > 0 && !cloud.entries.get(parentKey(entry.key)).loaded) continue; // evicted just now
    const needed = entry.node.pointCount;
    if (state.pointsLoaded + pendingPoints + needed > POINT_BUDGET) {
      // budget full: give up drawn leaves that matter less than this node, if that frees enough
      leaves = leaves || evictable(rank);
      const parent = parentKey(entry.key);
      const chosen = [];
      let freeable = 0;
      for (const leaf of leaves) {
        if (leaf.priority >= priority || state.pointsLoaded + pendingPoints + needed - freeable <= POINT_BUDGET) break;
        if (leaf.cloud === cloud && leaf.entry.key === parent) continue; // the node's own parent stays
        chosen.push(leaf);
        freeable += leaf.entry.node.pointCount;
      }
      if (state.pointsLoaded + pendingPoints + needed - freeable > POINT_BUDGET) continue;
      for (const leaf of chosen) {
        unload(leaf.entry);
        leaves.splice(leaves.indexOf(leaf), 1);
      }
    }
    inFlight += 1;
    pendingPoints += needed;
    idleReported = false;
    state.status = 'streaming';
    loadNode(cloud, entry)
      .then(() => {
        inFlight -= 1;
        pendingPoints -= needed;
        requestRender();
        show(summary());
        schedule();
      })
      .catch(fail);
  }
  if (inFlight === 0 && !idleReported) {
    idleReported = true;
    state.status = 'idle';
    render();
    state.drawnPixels = drawnPixels();
    show(summary());
    report('idle').catch(fail);
  }
}

function summary() {
  const mb = (state.bytesLoaded / 1e6).toFixed(1);
  return `${state.nodesLoaded}/${state.nodesInHierarchy} nodes, ${state.pointsLoaded.toLocaleString()} points, ${mb} MB`
    + ` (${state.status}; first frame ${((state.firstFrameBytes || 0) / 1e6).toFixed(2)} MB)`;
}

function fail(error) {
  state.status = 'error';
  state.error = String(error && error.message ? error.message : error);
  show(`error: ${state.error}`);
  fetch('api/report', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ event: 'error', ...state }),
  }).catch(() => {});
}

// ---- the view in the address: #view=EYE_X,EYE_Y,EYE_Z,TARGET_X,TARGET_Y,TARGET_Z in the cloud's CRS ----
function viewFromHash() {
  const match = /view=([^&]+)/.exec(location.hash);
  if (!match) return null;
  const values = match[1].split(',').map(Number);
  if (values.length !== 6 || !values.every(Number.isFinite)) return null;
  return { eye: new THREE.Vector3(...values.slice(0, 3)), target: new THREE.Vector3(...values.slice(3)) };
}

function viewHash() {
  const eye = camera.position.clone().add(origin);
  const target = controls.target.clone().add(origin);
  return `#view=${[...eye.toArray(), ...target.toArray()].map((v) => v.toFixed(2)).join(',')}`;
}

// ---- start ------------------------------------------------------------------------------------------
let lazPerf = null;
const origin = new THREE.Vector3();

async function main() {
  const started = performance.now();
  const listing = await (await fetch('api/clouds')).json();
  if (!listing.clouds.length) throw new Error('the server lists no cloud');
  // LAZ decompression in WebAssembly, fetched from this server (never a CDN)
  lazPerf = await createLazPerf({ locateFile: (file) => `static/${file}` });
  // a cloud is opened (header, VLRs, root hierarchy page) only when it is in view and its turn comes:
  // the server read every file's bounds and point count, enough to place the camera and rank the tiles
  const lo = new THREE.Vector3(Infinity, Infinity, Infinity);
  const hi = new THREE.Vector3(-Infinity, -Infinity, -Infinity);
  for (const item of listing.clouds) {
    if (!item.bounds) throw new Error(`the server gave no bounds for ${item.name}`);
    lo.min(new THREE.Vector3(...item.bounds.slice(0, 3)));
    hi.max(new THREE.Vector3(...item.bounds.slice(3)));
  }
  origin.copy(lo).add(hi).multiplyScalar(0.5); // one origin for every cloud: float32 keeps centimetres near it
  for (const item of listing.clouds) {
    const box = new THREE.Box3(new THREE.Vector3(...item.bounds.slice(0, 3)).sub(origin),
      new THREE.Vector3(...item.bounds.slice(3)).sub(origin));
    const outline = new THREE.Box3Helper(box, 0x55606a); // drawn until the cloud's root is
    scene.add(outline);
    state.clouds.push({ name: item.name, get: rangeGetter(item), points: item.points, box, outline, copc: null,
      opening: false, entries: new Map(), pages: new Map(), material: null });
  }
  updatePointScale();
  const extent = hi.clone().sub(lo);
  const radius = Math.max(extent.x, extent.y, extent.z, 1) * 0.5;
  camera.near = radius / 1000;
  camera.far = radius * 100;
  camera.updateProjectionMatrix();
  const view = viewFromHash();
  if (view) {
    camera.position.copy(view.eye.sub(origin));
    controls.target.copy(view.target.sub(origin));
  } else {
    camera.position.set(0, -radius * 1.6, radius * 1.2);
    controls.target.set(0, 0, 0);
  }
  controls.update();
  camera.updateMatrixWorld();

  render();
  background = readPixels().slice(0, 4);
  // first frame: the root nodes of the clouds in view (the best FIRST_FRAME_CLOUDS), nothing deeper
  const rank = viewRanking();
  const first = state.clouds.map((cloud) => ({ cloud, priority: rank(cloud, null) }))
    .filter(({ priority }) => priority >= 0).sort((a, b) => b.priority - a.priority).slice(0, FIRST_FRAME_CLOUDS)
    .map(({ cloud }) => cloud);
  await Promise.all(first.map(openCloud));
  let budget = POINT_BUDGET;
  const roots = first.map((cloud) => ({ cloud, root: cloud.entries.get('0-0-0-0') })).filter(({ root }) => {
    budget -= root.node.pointCount;
    return budget >= 0;
  });
  await Promise.all(roots.map(({ cloud, root }) => loadNode(cloud, root)));
  render();
  state.firstFrameBytes = state.bytesLoaded;
  state.firstFrameNodes = state.nodesLoaded;
  state.firstFrameMs = Math.round(performance.now() - started);
  state.firstFramePixels = drawnPixels();
  state.status = 'first-frame';
  show(summary());
  await report('first-frame');

  controls.addEventListener('end', () => history.replaceState(null, '', viewHash()));
  controls.addEventListener('change', () => {
    requestRender();
    schedule();
  });
  window.addEventListener('resize', () => {
    camera.aspect = window.innerWidth / window.innerHeight;
    camera.updateProjectionMatrix();
    renderer.setSize(window.innerWidth, window.innerHeight);
    updatePointScale();
    requestRender();
    schedule();
  });
  schedule();
}

main().catch(fail);
