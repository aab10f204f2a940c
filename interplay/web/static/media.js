// The page's inputs: the microphone through an AudioWorklet (16 kHz PCM16, 20 ms frames) and an
// optional camera (a canvas grabbed as JPEG a few times a second). Each hands its frames to `send`
// callbacks; neither keeps more than one frame.

export async function startMic(ctx, onFrame) {
  await ctx.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
  const stream = await navigator.mediaDevices.getUserMedia({
    // echo cancellation keeps the assistant's own voice out of the mic (no false barge-ins); noise
    // suppression is left to the ears, whose VAD and recogniser expect the room as it is
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
  });
  const source = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "interplay-mic");
  node.port.onmessage = (m) => onFrame(m.data.pcm, m.data.rms);
  source.connect(node); // the worklet outputs nothing: the mic is never played back
  return () => {
    node.port.onmessage = null;
    source.disconnect();
    for (const t of stream.getTracks()) t.stop();
  };
}

export async function startCamera(video, onJpeg, fps = 2) {
  const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 } });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  const canvas = document.createElement("canvas");
  canvas.width = 160;
  canvas.height = 120;
  const g = canvas.getContext("2d");
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return; // the previous frame is still being encoded: skip this one
    busy = true;
    g.drawImage(video, 0, 0, canvas.width, canvas.height);
    canvas.toBlob(async (blob) => {
      busy = false;
      if (blob) onJpeg(await blob.arrayBuffer());
    }, "image/jpeg", 0.7);
  }, 1000 / fps);
  return () => {
    clearInterval(timer);
    for (const t of stream.getTracks()) t.stop();
    video.srcObject = null;
    video.hidden = true;
  };
}
